//! Maps (method, path) to an operation and its route template (the counters' key).
use http::Method;

/// A route table row: template (`:name` segments capture), method, operation.
pub type Route<Op> = (&'static str, Method, Op);

#[derive(Debug, Clone)]
pub struct Matched<Op> {
    pub op: Op,
    pub template: &'static str,
    pub params: Vec<String>,
}

#[derive(Debug, PartialEq)]
pub enum Miss {
    NotFound,
    MethodNotAllowed(Vec<&'static str>),
}

fn capture(template: &str, path: &str) -> Option<Vec<String>> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut params = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with(':') && !ps.is_empty() => {
                params.push(ps.to_string())
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// The first template matching the path wins (list literal routes before captures).
pub fn route<Op: Copy>(
    table: &'static [Route<Op>],
    method: &Method,
    path: &str,
) -> Result<Matched<Op>, Miss> {
    let Some((template, params)) = table
        .iter()
        .find_map(|(t, _, _)| capture(t, path).map(|p| (*t, p)))
    else {
        return Err(Miss::NotFound);
    };
    let same: Vec<&Route<Op>> = table.iter().filter(|(t, _, _)| *t == template).collect();
    match same.iter().find(|(_, m, _)| m == method) {
        Some((_, _, op)) => Ok(Matched {
            op: *op,
            template,
            params,
        }),
        None => Err(Miss::MethodNotAllowed(
            same.iter().map(|(_, m, _)| m.as_str()).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        static TABLE: &[Route<u8>] = &[
            ("/a", Method::GET, 1),
            ("/a/:id", Method::GET, 2),
            ("/a/:id", Method::DELETE, 3),
            ("/a/:id/b/:x", Method::POST, 4),
        ];
        let table = TABLE;
        let m = route(table, &Method::POST, "/a/1/b/2").unwrap();
        assert_eq!((m.op, m.params.clone()), (4, vec!["1".into(), "2".into()]));
        assert_eq!(route(table, &Method::GET, "/a").unwrap().template, "/a");
        assert_eq!(
            route(table, &Method::PUT, "/a/1").unwrap_err(),
            Miss::MethodNotAllowed(vec!["GET", "DELETE"])
        );
        assert_eq!(
            route(table, &Method::GET, "/a/").unwrap_err(),
            Miss::NotFound
        );
    }
}
