//! Listings: every page to the end, rows deduplicated by id, the page size and the page
//! token's spelling learned from the API's answers (the docs do not say, issue 28).

use super::*;

/// The list parameter spellings tried for a page token, the first the usual one.
const TOKEN_PARAMS: [&str; 3] = ["page_token", "pageToken", "next_page_token"];

/// What a listing learned: whether `page_size` at [`PAGE_SIZE`] is accepted (else the
/// API's default page is used), and which spelling carries the page token.
#[derive(Debug)]
pub(super) struct Paging {
    sized: AtomicBool,
    token_param: AtomicUsize,
}

impl Default for Paging {
    fn default() -> Paging {
        Paging {
            sized: AtomicBool::new(true),
            token_param: AtomicUsize::new(0),
        }
    }
}

/// List rows deduplicated across pages by id.
pub(super) trait HasId {
    fn id(&self) -> &str;
}

impl HasId for YhClient {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for Enterprise {
    fn id(&self) -> &str {
        &self.id
    }
}

impl YouhodlerClient {
    /// Follows `next_page_token` to the end (`page_size` at the API's maximum).
    pub(super) async fn all_pages<T: DeserializeOwned + HasId>(
        &self,
        route: &'static str,
        filter: &[(&'static str, String)],
    ) -> Result<Vec<T>, ProviderError> {
        let mut items = Vec::new();
        self.each_item(route, filter, |item| items.push(item))
            .await?;
        Ok(items)
    }

    /// Follows `next_page_token` to the end, handing each item (once, by id) to `each` as
    /// its page arrives: a long listing is never held whole.
    ///
    /// The list parameters are not documented (other-providers.md §1 infers `page_size` and
    /// a page token), so a listing adapts and the client remembers what worked (issue 28,
    /// row 9): a `400` to a request with `page_size` is retried with the API's default page;
    /// a `400` to a request with a page token, or a page that answers the token sent with the
    /// same token (the API ignored it and served page 1 again), tries the next spelling of
    /// [`TOKEN_PARAMS`]. When none works the listing fails, naming it; it never loops.
    pub(super) async fn each_item<T: DeserializeOwned + HasId>(
        &self,
        route: &'static str,
        filter: &[(&'static str, String)],
        mut each: impl FnMut(T),
    ) -> Result<(), ProviderError> {
        let mut seen = HashSet::new();
        let mut token: Option<String> = None;
        let mut spellings_tried = 0;
        let mut pages = 0;
        while pages < MAX_PAGES {
            let sized = self.paging.sized.load(Ordering::Relaxed);
            let spelling = self.paging.token_param.load(Ordering::Relaxed) % TOKEN_PARAMS.len();
            let mut call = Call::new(Method::GET, route, route.into());
            if sized {
                call = call.query("page_size", PAGE_SIZE.to_string());
            }
            call.http.query.extend(filter.iter().cloned());
            if let Some(t) = &token {
                call = call.query(TOKEN_PARAMS[spelling], t.clone());
            }
            let answer = match self.send(&call).await {
                Err(e) if e.api_failure().is_some_and(|f| f.status == 400) => {
                    if sized {
                        tracing::info!(
                            route,
                            "the API refused page_size={PAGE_SIZE}; using its default page size"
                        );
                        self.paging.sized.store(false, Ordering::Relaxed);
                        continue;
                    }
                    if token.is_some() && spellings_tried + 1 < TOKEN_PARAMS.len() {
                        spellings_tried += 1;
                        self.next_token_spelling(route, spelling);
                        continue;
                    }
                    return Err(e);
                }
                other => other?,
            };
            let page: Page<T> = decode(route, &answer.body)?;
            let next = page.next_page_token.filter(|t| !t.is_empty());
            if token.is_some() && next == token {
                // The token was not read: page 1 again. Another spelling, or give up.
                if spellings_tried + 1 < TOKEN_PARAMS.len() {
                    spellings_tried += 1;
                    self.next_token_spelling(route, spelling);
                    continue;
                }
                return Err(ProviderError::Decode {
                    route: route.into(),
                    detail: format!(
                        "the API returned the same page token twice under every parameter tried ({})",
                        TOKEN_PARAMS.join(", ")
                    ),
                });
            }
            spellings_tried = 0;
            pages += 1;
            page.items
                .into_iter()
                .filter(|item| seen.insert(item.id().to_string()))
                .for_each(&mut each);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(()),
            }
        }
        Err(ProviderError::Decode {
            route: route.into(),
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    fn next_token_spelling(&self, route: &str, current: usize) {
        let next = (current + 1) % TOKEN_PARAMS.len();
        tracing::info!(
            route,
            tried = TOKEN_PARAMS[current],
            next = TOKEN_PARAMS[next],
            "the API did not take the page token under this name; trying another"
        );
        self.paging.token_param.store(next, Ordering::Relaxed);
    }
}
