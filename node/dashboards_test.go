package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mcpgw/mcpgw/storage"
)

// The dashboard and alert rules shipped in deploy/, read from the
// repository.
const (
	dashboardFile = "../deploy/grafana/mcpgw.json"
	alertsFile    = "../deploy/prometheus/alerts.yml"
)

// metricRef finds the mcpgw metric names a PromQL expression uses.
var metricRef = regexp.MustCompile(`\bmcpgw_[a-zA-Z0-9_]+`)

// scrapeFamilies fetches n's /metrics, as Prometheus would, and returns
// its metric families by name with their types.
func scrapeFamilies(t testing.TB, n *Node) map[string]string {
	t.Helper()
	resp, err := http.Get(n.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d, %v", resp.StatusCode, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]string{}
	for name, mf := range mfs {
		out[name] = mf.GetType().String()
	}
	return out
}

// exported reports whether the series name (a histogram's _bucket, _count
// or _sum included) is in families.
func exported(families map[string]string, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && families[base] == "HISTOGRAM" {
			return true
		}
	}
	return false
}

// dashboardExprs returns every PromQL expression of the Grafana dashboard:
// its panels' targets and its template variables' queries, keyed by where
// they are.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
			GridPos *struct{ H, W, X, Y int } `json:"gridPos"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s is not valid dashboard JSON: %v", dashboardFile, err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("%s: title %q, uid %q, %d panels; want all set", dashboardFile, dash.Title, dash.UID, len(dash.Panels))
	}
	exprs := map[string]string{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q has no valid gridPos", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" {
				t.Errorf("panel %q has a target without expr or refId", p.Title)
			}
			exprs["panel "+p.Title+" "+tg.RefID] = tg.Expr
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			exprs["variable "+v.Name], _ = q["query"].(string)
		}
	}
	return exprs
}

// alertRule is one rule of alerts.yml.
type alertRule struct {
	fields map[string]string // alert, expr, for, severity, summary, description
}

// alertRules reads alerts.yml. The module has no YAML library, so this
// checks the one layout the file keeps (groups → rules → alert, expr on one
// line, for, labels.severity, annotations.summary and description) rather
// than YAML in general, and fails on anything else.
func alertRules(t *testing.T) []alertRule {
	t.Helper()
	f, err := os.Open(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rules []alertRule
	var cur *alertRule
	section := ""
	sawGroups := false
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		trimmed := strings.TrimSpace(text)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.Contains(text, "\t") {
			t.Fatalf("%s:%d: tab in YAML", alertsFile, line)
		}
		indent := len(text) - len(strings.TrimLeft(text, " "))
		key, value, ok := strings.Cut(strings.TrimPrefix(trimmed, "- "), ":")
		if !ok {
			t.Fatalf("%s:%d: %q is not a key: value line", alertsFile, line, trimmed)
		}
		value = strings.TrimSpace(value)
		if uq, err := unquoteYAML(value); err == nil {
			value = uq
		} else {
			t.Fatalf("%s:%d: %v", alertsFile, line, err)
		}
		switch {
		case indent == 0 && key == "groups" && value == "":
			sawGroups = true
		case indent == 2 && key == "name" && strings.HasPrefix(trimmed, "- "):
		case indent == 4 && key == "rules" && value == "":
		case indent == 6 && key == "alert" && strings.HasPrefix(trimmed, "- "):
			rules = append(rules, alertRule{fields: map[string]string{"alert": value}})
			cur = &rules[len(rules)-1]
			section = ""
		case cur != nil && indent == 8 && (key == "expr" || key == "for"):
			cur.fields[key] = value
			section = ""
		case cur != nil && indent == 8 && (key == "labels" || key == "annotations") && value == "":
			section = key
		case cur != nil && indent == 10 && section == "labels" && key == "severity",
			cur != nil && indent == 10 && section == "annotations" && (key == "summary" || key == "description"):
			cur.fields[key] = value
		default:
			t.Fatalf("%s:%d: unexpected %q at indent %d (the test reads one layout: see alertRules)", alertsFile, line, trimmed, indent)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !sawGroups || len(rules) == 0 {
		t.Fatalf("%s: no groups or no rules", alertsFile)
	}
	return rules
}

// unquoteYAML reads a plain or double-quoted YAML scalar.
func unquoteYAML(v string) (string, error) {
	if !strings.HasPrefix(v, `"`) {
		return v, nil
	}
	var s string
	err := json.Unmarshal([]byte(v), &s)
	return s, err
}

// TestDeployDashboardsUseExportedMetrics checks the Grafana dashboard and
// the alert rules in deploy/ against a running cluster: both parse, every
// alert rule is complete, the expected alerts are there, and every metric
// they name is on a node's /metrics, so neither can refer to a metric that
// was renamed or removed.
func TestDeployDashboardsUseExportedMetrics(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := waitForLeader(t, nodes, 3)
	// Per-route and per-limit series exist once a route and a limit do.
	addRoute(t, leader, storage.Route{Name: "gh", URL: "http://127.0.0.1:1/mcp"})
	if resp := adminDo(t, leader, http.MethodPost, "/v1/limits", storage.Limit{ID: "l1", Service: "*", Org: "*", Account: "*", Route: "gh", Tool: "*", Rate: 1, Burst: 1}); resp.StatusCode != http.StatusOK {
		t.Fatalf("put limit: HTTP %d", resp.StatusCode)
	}
	families := scrapeFamilies(t, leader)

	exprs := dashboardExprs(t)
	for _, r := range alertRules(t) {
		name := r.fields["alert"]
		for _, k := range []string{"expr", "for", "severity", "summary", "description"} {
			if r.fields[k] == "" {
				t.Errorf("alert %s has no %s", name, k)
			}
		}
		if s := r.fields["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", name, s)
		}
		exprs["alert "+name] = r.fields["expr"]
	}
	for _, want := range []string{"MCPGWNoLeader", "MCPGWLeaderFlapping", "MCPGWAuditDropping", "MCPGWAuditQueueNearFull",
		"MCPGWUpstreamErrorRate", "MCPGWGatewayLatencyHigh", "MCPGWNodeNotReady", "MCPGWCertExpiringSoon"} {
		if _, ok := exprs["alert "+want]; !ok {
			t.Errorf("alerts.yml has no alert %s", want)
		}
	}

	var missing []string
	used := map[string]bool{}
	for where, expr := range exprs {
		if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
			t.Errorf("%s: unbalanced brackets in %q", where, expr)
		}
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: %q names no mcpgw metric", where, expr)
		}
		for _, m := range refs {
			used[m] = true
			if !exported(families, m) {
				missing = append(missing, where+": "+m)
			}
		}
	}
	sort.Strings(missing)
	for _, m := range slices.Compact(missing) {
		t.Errorf("not on /metrics: %s", m)
	}
	t.Logf("%d expressions use %d metrics", len(exprs), len(used))
}
