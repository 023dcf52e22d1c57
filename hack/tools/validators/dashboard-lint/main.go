// Command dashboard-lint checks Grafana dashboard JSON files: the nearest substitute for
// grafana/dashboard-linter, whose Go module the proxy reachable here does not serve (see
// docs/development.md). Written for orgops, not copied: the document must decode strictly
// into the Grafana Foundation SDK's Dashboard type and pass its Validate(), and then the
// rules dashboard-linter documents for Prometheus dashboards apply:
//
//	template-datasource  a `datasource` variable of type datasource, query prometheus
//	template-job         `job` and `instance` query variables on ${datasource}, refreshed on
//	template-instance    time-range change, multi-value with All
//	panel-datasource     every panel and target uses ${datasource}
//	panel-title-description  every panel has a title and a description
//	panel-units          every stat / timeseries / gauge panel sets a unit
//	target-promql        every expression parses as PromQL (Prometheus' own parser)
//	target-job, target-instance  every selector filters job=~"$job" and instance=~"$instance"
//	target-rate-interval rate(), irate() and increase() range over $__rate_interval
//	uneditable           editable is false (the JSON in Git is the source)
//	unique-ids           panel ids are unique
//
// Usage: dashboard-lint FILE...   (exit 1 and one line per problem on failure)
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/prometheus/promql/parser"
)

type problem struct{ where, rule, msg string }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dashboard-lint FILE...")
		os.Exit(2)
	}
	total := 0
	for _, path := range os.Args[1:] {
		problems, panels, err := lint(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		for _, p := range problems {
			fmt.Fprintf(os.Stderr, "%s: %s: [%s] %s\n", path, p.where, p.rule, p.msg)
		}
		total += len(problems)
		if len(problems) == 0 {
			fmt.Printf("%s: ok (%d panels: strict schema decode, every rule)\n", path, panels)
		}
	}
	if total > 0 {
		os.Exit(1)
	}
}

func lint(path string) ([]problem, int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var typed dashboard.Dashboard
	if err := real(typed.UnmarshalJSONStrict(raw)); err != nil {
		return nil, 0, fmt.Errorf("not a Grafana dashboard (strict decode): %w", err)
	}
	if err := real(typed.Validate()); err != nil {
		return nil, 0, fmt.Errorf("the dashboard schema rejects it: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, 0, err
	}
	var out []problem
	add := func(where, rule, format string, args ...any) {
		out = append(out, problem{where, rule, fmt.Sprintf(format, args...)})
	}
	if doc["editable"] != false {
		add("dashboard", "uneditable", "set editable to false: the JSON in Git is the source")
	}
	vars := map[string]map[string]any{}
	for _, v := range list(obj(doc["templating"])["list"]) {
		m := obj(v)
		vars[str(m["name"])] = m
	}
	if ds := vars["datasource"]; ds == nil || str(ds["type"]) != "datasource" || str(ds["query"]) != "prometheus" {
		add("templating", "template-datasource", "needs a variable named datasource of type datasource with query prometheus")
	}
	for _, name := range []string{"job", "instance"} {
		v := vars[name]
		rule := "template-" + name
		if v == nil {
			add("templating", rule, "needs a query variable named %s", name)
			continue
		}
		if str(v["type"]) != "query" || !usesDatasourceVar(v["datasource"]) {
			add("templating."+name, rule, "must be a query variable on ${datasource}")
		}
		if num(v["refresh"]) != 2 {
			add("templating."+name, rule, "refresh must be 2 (on time-range change)")
		}
		if v["multi"] != true || v["includeAll"] != true {
			add("templating."+name, rule, "must be multi-value with an All option")
		}
	}
	ids := map[float64]bool{}
	panels := flatten(list(doc["panels"]))
	for _, p := range panels {
		title := str(p["title"])
		where := fmt.Sprintf("panel %q", title)
		if str(p["type"]) == "row" {
			continue
		}
		id := num(p["id"])
		if ids[id] {
			add(where, "unique-ids", "panel id %v is used twice", id)
		}
		ids[id] = true
		if title == "" || str(p["description"]) == "" {
			add(where, "panel-title-description", "needs a title and a description")
		}
		if !usesDatasourceVar(p["datasource"]) {
			add(where, "panel-datasource", "datasource must be ${datasource}")
		}
		switch str(p["type"]) {
		case "stat", "timeseries", "gauge", "bargauge":
			if str(obj(obj(p["fieldConfig"])["defaults"])["unit"]) == "" {
				add(where, "panel-units", "set fieldConfig.defaults.unit")
			}
		}
		targets := list(p["targets"])
		if len(targets) == 0 {
			add(where, "target-promql", "has no query")
		}
		for _, t := range targets {
			tm := obj(t)
			if tm["datasource"] != nil && !usesDatasourceVar(tm["datasource"]) {
				add(where, "panel-datasource", "target %s: datasource must be ${datasource}", str(tm["refId"]))
			}
			for _, msg := range checkExpr(str(tm["expr"])) {
				add(where, msg.rule, "target %s: %s", str(tm["refId"]), msg.msg)
			}
		}
	}
	return out, len(panels), nil
}

// real drops the SDK's empty error list, which it returns as a non-nil error.
func real(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}

// checkExpr parses one query (Grafana's variables replaced by values of their kind) and
// checks its selectors and range functions.
func checkExpr(expr string) []problem {
	var out []problem
	if strings.TrimSpace(expr) == "" {
		return []problem{{"", "target-promql", "empty expression"}}
	}
	for _, fn := range []string{"rate(", "irate(", "increase("} {
		for rest := expr; ; {
			i := strings.Index(rest, fn)
			if i < 0 {
				break
			}
			if i > 0 && isIdent(rest[i-1]) {
				rest = rest[i+len(fn):]
				continue
			}
			body := rest[i+len(fn):]
			end := strings.Index(body, "]")
			if end < 0 || !strings.HasSuffix(body[:end], "[$__rate_interval") {
				out = append(out, problem{"", "target-rate-interval", fn + ") must range over [$__rate_interval]"})
			}
			rest = body
		}
	}
	replaced := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
		`"$job"`, `"job"`, `"$instance"`, `"instance"`).Replace(expr)
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(replaced)
	if err != nil {
		return append(out, problem{"", "target-promql", "does not parse as PromQL: " + err.Error()})
	}
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		for _, want := range []string{"job", "instance"} {
			found := false
			for _, m := range vs.LabelMatchers {
				if m.Name == want && m.Type.String() == "=~" && m.Value == want {
					found = true
				}
			}
			if !found {
				out = append(out, problem{"", "target-" + want, fmt.Sprintf("selector %s must filter %s=~\"$%s\"", vs.Name, want, want)})
			}
		}
		return nil
	})
	return out
}

func flatten(panels []any) []map[string]any {
	var out []map[string]any
	for _, p := range panels {
		m := obj(p)
		out = append(out, m)
		out = append(out, flatten(list(m["panels"]))...)
	}
	return out
}

func usesDatasourceVar(v any) bool {
	switch d := v.(type) {
	case string:
		return d == "${datasource}" || d == "$datasource"
	case map[string]any:
		uid := str(d["uid"])
		return uid == "${datasource}" || uid == "$datasource"
	}
	return false
}

func isIdent(b byte) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) float64 {
	n, _ := v.(float64)
	return n
}
