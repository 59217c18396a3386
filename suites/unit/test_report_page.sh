#!/usr/bin/env bash
# `parabench report A B --html --md`: the page for two results files renders in headless
# Chromium (the screenshot is not blank), its text holds every case of both files and
# every section and table heading (the pipelines' measured timelines and schedule diagrams
# included), both files' columns are there; the Markdown's throughput medians and every
# rank's measured and predicted memory equal the JSON's. Skips (exit 77) where Chromium or matplotlib is not
# installed (scripts/bootstrap.sh installs both).
#   test_report_page.sh PARABENCH SOURCE_DIR
set -u
pb=$1; src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "SKIP: chromium is not installed (Debian package chromium)"; exit 77; }
py=/usr/bin/python3; [ -x "$py" ] || py=python3
"$py" -c "import matplotlib" 2> /dev/null || { echo "SKIP: matplotlib is not installed (python3-matplotlib)"; exit 77; }
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# Two files of one suite: the committed smoke baseline and a copy 1.5x slower elsewhere.
cp "$src/results/baselines/cpu-smoke.json" "$work/a.json"
"$py" - "$work/a.json" "$work/b.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["env"]["host"] = "other-machine"
for c in r["cases"]:
    for k in ("step_ms_median", "step_ms_min", "step_ms_max"):
        if c["throughput"].get(k) is not None: c["throughput"][k] *= 1.5
json.dump(r, open(sys.argv[2], "w"))
PY
"$pb" report "$work/a.json" "$work/b.json" --html "$work/p.html" --md "$work/p.md" > "$work/out" 2>&1
[ $? -eq 0 ] && [ -s "$work/p.html" ] && [ -s "$work/p.md" ] && ok "report wrote the page and the Markdown" \
  || { bad "report: $(cat "$work/out")"; exit 1; }
grep -q "http" <(grep -o '<script[^>]*src=[^>]*>\|<link[^>]*href=[^>]*>\|<img[^>]*src="http[^>]*>' "$work/p.html") \
  && bad "the page loads something from outside" || ok "self-contained (no external resource)"

timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,2000 \
  --screenshot="$work/shot.png" "file://$work/p.html" > /dev/null 2>&1
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --dump-dom "file://$work/p.html" > "$work/dom.html" 2> /dev/null
"$py" - "$work/shot.png" <<'PY' && ok "the screenshot is not blank" || bad "blank or missing screenshot"
import sys
import matplotlib.image as im
a = im.imread(sys.argv[1])
assert a.shape[0] > 100 and a.shape[1] > 100, a.shape
assert a[..., :3].std() > 0.05, a[..., :3].std()
PY
"$py" - "$work/dom.html" "$work/a.json" "$work/b.json" <<'PY' && ok "every case, heading and both files' columns in the page's text" || bad "page text"
import html, json, re, sys
text = html.unescape(re.sub(r"<[^>]+>", " ", open(sys.argv[1]).read()))
names = {c["name"] for f in sys.argv[2:] for c in json.load(open(f))["cases"]}
missing = [n for n in names if not re.search(r"(^|\s)" + re.escape(n) + r"(\s|$)", text)]
assert not missing, missing
for h in ["Environment", "Equivalence", "Throughput", "Memory", "Communication", "Pipelines", "Balance", "Overlap",
          "Step time per case", "Memory by category", "measured, the last step", "Balance per rank"]:
    assert h in text, h
for col in ["file 1 ms/step", "file 2 ms/step", "file 2 / file 1", "other-machine"]:
    assert col in text, col
PY
"$py" - "$work/p.md" "$work/a.json" "$work/b.json" <<'PY' && ok "the Markdown's medians and memory peaks equal the JSON's" || bad "Markdown numbers"
import json, sys
md = open(sys.argv[1]).read().splitlines()
docs = [json.load(open(f)) for f in sys.argv[2:]]
def table(title):
    i = md.index("### " + title) + 2
    rows = []
    while i < len(md) and md[i].startswith("|"):
        rows.append(md[i]); i += 1
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    return head, [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]
head, rows = table("Throughput")
n = 0
for r in rows:
    for k, d in enumerate(docs):
        c = next(c for c in d["cases"] if c["name"] == r[0])
        cell = r[head.index("file %d ms/step median (min–max)" % (k + 1))]
        assert cell.startswith("%.2f (" % c["throughput"]["step_ms_median"]), (r[0], cell)
        n += 1
head, rows = table("Memory per rank and category, measured and predicted")
for r in rows:
    for k, d in enumerate(docs):
        c = next(c for c in d["cases"] if c["name"] == r[0])
        m = next(m for m in c["memory"] if m["rank"] == int(r[1]) and m["category"] == r[2])
        assert r[head.index("file %d measured (B)" % (k + 1))] == str(m["measured_bytes"]), (r, m)
        assert r[head.index("file %d predicted (B)" % (k + 1))] == str(m["predicted_bytes"]), (r, m)
        n += 1
assert n > 50, n
PY
# Bad input: one line, exit 2.
echo '{"schema": "something/9"}' > "$work/bad.json"
"$pb" report "$work/a.json" "$work/bad.json" --html "$work/q.html" > /dev/null 2> "$work/err"; rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < "$work/err")" -eq 1 ] && [ ! -e "$work/q.html" ] && ok "a wrong schema: one line, exit 2, no page" \
  || bad "wrong schema: exit $rc $(cat "$work/err")"
exit $fail
