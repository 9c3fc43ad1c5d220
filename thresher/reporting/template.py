"""The report's HTML template (Jinja2, autoescaped) and its stylesheet.

The page has no script and loads nothing: styles are inline and plots are
``data:`` URIs. Everything from the run (document text, ids, details,
parameters) goes through autoescaping, so a document holding ``<script>``
is shown as text.
"""

from __future__ import annotations

STYLE = """
:root { --ink:#212529; --muted:#6c757d; --line:#dee2e6; --kept:#2b8a3e; --drop:#c92a2a;
        --bg:#f8f9fa; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 "Segoe UI",Roboto,"Helvetica Neue",Arial,"DejaVu Sans",sans-serif;
       color:var(--ink); background:#fff; }
header { background:#1f2937; color:#fff; padding:14px 24px; }
header h1 { margin:0; font-size:20px; }
header .meta { color:#cbd5e1; font-size:13px; margin-top:4px; }
header code { background:#374151; color:#fff; }
nav { position:sticky; top:0; background:#fff; border-bottom:1px solid var(--line);
      padding:6px 24px; z-index:1; font-size:13px; }
nav a { margin-right:14px; color:#1c7ed6; text-decoration:none; }
main { max-width:1180px; margin:0 auto; padding:8px 24px 48px; }
section { margin-top:26px; }
h2 { font-size:18px; border-bottom:2px solid var(--line); padding-bottom:4px; }
h3 { font-size:15px; margin:18px 0 6px; }
.summary { display:flex; flex-wrap:wrap; gap:12px; margin-top:14px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 14px; min-width:150px;
        background:var(--bg); }
.card .value { font-size:20px; font-weight:600; }
.card .label { color:var(--muted); font-size:12px; }
.card.kept .value { color:var(--kept); }
.card.drop .value { color:var(--drop); }
table { border-collapse:collapse; margin:6px 0 10px; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:3px 10px 3px 0; text-align:left;
         vertical-align:top; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; padding-left:10px; }
code { font-size:12px; background:var(--bg); padding:0 3px; border-radius:3px;
       word-break:break-all; }
.plots { display:grid; grid-template-columns:repeat(auto-fill,minmax(480px,1fr)); gap:12px; }
figure { margin:0; border:1px solid var(--line); border-radius:6px; padding:6px; }
figure img { width:100%; height:auto; display:block; }
figure.wide img { max-width:720px; }
figcaption, .caption { color:var(--muted); font-size:12px; }
.note { border-left:4px solid #f59f00; background:#fff9db; padding:6px 10px; margin:8px 0; }
.note.eval-warning, .note.dedup-warning { border-left-color:#e03131; background:#fff5f5; }
details { border:1px solid var(--line); border-radius:6px; margin:6px 0; padding:4px 10px; }
details > summary { cursor:pointer; font-weight:600; }
.doc { border-top:1px dashed var(--line); padding:6px 0; }
.doc .where { color:var(--muted); font-size:12px; }
.doc pre { white-space:pre-wrap; word-break:break-word; margin:4px 0 0; font-size:12px;
           background:var(--bg); padding:6px 8px; border-radius:4px; max-height:16em;
           overflow:auto; }
.kept-tag { color:var(--kept); font-weight:600; }
.drop-tag { color:var(--drop); font-weight:600; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="thresher {{ version }}">
<title>thresher report: {{ title }}</title>
<style>{{ style | safe }}</style>
</head>
<body>
<header>
  <h1>thresher run report: {{ title }}</h1>
  <div class="meta">{{ run_dir }}{% if manifest %} · created {{ manifest.created }}
    · engine {{ manifest.engine }} · seed {{ manifest.seed }}
    · config <code>{{ manifest.config_hash[:12] }}</code>{% endif %}</div>
</header>
<nav>
  <a href="#funnel">Funnel</a>
  {% if score_plots %}<a href="#scores">Scores</a>{% endif %}
  {% if dedup %}<a href="#duplicates">Duplicates</a>{% endif %}
  {% if contamination %}<a href="#contamination">Contamination</a>{% endif %}
  {% if steps %}<a href="#selection">Selection</a>{% endif %}
  {% if curve %}<a href="#pruning-curve">Pruning curve</a>{% endif %}
  {% if examples %}<a href="#examples">Examples</a>{% endif %}
  <a href="#run">Run</a>
</nav>
<main>
{% for note in notes %}<div class="note">{{ note }}</div>{% endfor %}
{% if skipped %}<div class="note">{{ skipped | length }} damaged input file(s) were skipped:
see <a href="#skipped">Damaged inputs</a>.</div>{% endif %}
{% if eval_run %}<div class="note eval-run">Eval of {{ eval_run.selectors | length }}
selector{{ "s" if eval_run.selectors | length != 1 }}{% if eval_run.selectors %} ({% for name in eval_run.selectors %}<code>{{ name }}</code>{% if not loop.last %}, {% endif %}{% endfor %}){% endif %}{% if eval_run.rates %} at pruning rate{{ "s" if eval_run.rates | length != 1 }} {{ eval_run.rates | join(", ") }}{% endif %}{% if eval_run.seeds %}, {{ eval_run.seeds }} seed{{ "s" if eval_run.seeds != 1 }} each{% endif %}: this run scored
the training pool once; each selection was made and trained by <code>thresher eval</code>
(see the <a href="#pruning-curve">pruning curve</a> below).{% if manifest %} The funnel and the
selection shown here are those of a later <code>thresher select</code> of this run, not the
eval's.{% endif %}</div>
{% elif not manifest %}<div class="note">No selection yet: this run was scored but not
selected. Run <code>thresher select</code> to choose a subset; the funnel and the kept/dropped
split appear then.</div>{% endif %}

<div class="summary">
  <div class="card"><div class="value">{{ input_count | num }}</div><div class="label">input records</div></div>
  {% for card in cards %}
  <div class="card {{ card.kind }}"><div class="value">{{ card.value | num }}</div>
    <div class="label">{{ card.label }}</div></div>
  {% endfor %}
</div>

<section id="funnel">
<h2>Funnel</h2>
<figure class="wide"><img class="plot" alt="funnel plot" src="{{ funnel_plot }}"></figure>
<table>
  <tr><th>stage</th><th>reason</th><th class="num">removed</th><th class="num">left after stage</th></tr>
  <tr><td>input</td><td></td><td class="num"></td><td class="num">{{ input_count | num }}</td></tr>
  {% for step in funnel %}
    {% for reason, count in step.removed.items() %}
    <tr><td>{% if loop.first %}{{ step.stage }}{% endif %}</td><td><code>{{ reason }}</code></td>
      <td class="num">{{ count | num }}</td>
      <td class="num">{% if loop.last %}{{ step.remaining | num }}{% endif %}</td></tr>
    {% else %}
    <tr><td>{{ step.stage }}</td><td>none</td><td class="num">0</td>
      <td class="num">{{ step.remaining | num }}</td></tr>
    {% endfor %}
  {% endfor %}
  {% if kept is not none %}<tr><th>selected</th><td></td><td class="num"></td>
    <th class="num">{{ kept | num }}</th></tr>{% endif %}
</table>
</section>

{% if score_plots %}
<section id="scores">
<h2>Scores</h2>
<p class="caption">{{ score_caption }}</p>
<table>
  <tr><th>score</th><th class="num">min</th><th class="num">median</th><th class="num">max</th>
    {% if has_decisions %}<th class="num">kept</th><th class="num">dropped</th>{% endif %}</tr>
  {% for row in score_table %}
  <tr><td><code>{{ row.column }}</code></td><td class="num">{{ row.min }}</td>
    <td class="num">{{ row.median }}</td><td class="num">{{ row.max }}</td>
    {% if has_decisions %}<td class="num">{{ row.kept }}</td><td class="num">{{ row.dropped }}</td>{% endif %}</tr>
  {% endfor %}
</table>
<div class="plots">
{% for plot in score_plots %}
<figure><img class="plot" alt="histogram of {{ plot.column }}" src="{{ plot.uri }}"></figure>
{% endfor %}
</div>
</section>
{% endif %}

{% if dedup %}
<section id="duplicates">
<h2>Duplicates</h2>
{% for warning in dedup.warnings %}<div class="note dedup-warning"><strong>WARNING:</strong> {{ warning }}</div>{% endfor %}
{% if dedup.rule %}<p class="dedup-rule">{{ dedup.rule }}</p>{% endif %}
<table>
  {% for label, value in dedup.summary %}<tr><td>{{ label }}</td><td class="num">{{ value | num }}</td></tr>{% endfor %}
</table>
<div class="plots">
<figure><img class="plot" alt="duplicate cluster sizes" src="{{ dedup.plot }}"></figure>
{% if dedup.similarity_plot %}<figure><img class="plot" alt="similarity to keeper of removed near-duplicates" src="{{ dedup.similarity_plot }}">
  <figcaption>Each near-duplicate removed, by the share of MinHash values it has in common
  with its cluster's keeper (exact copies are not counted); the dashed line is the
  threshold.</figcaption></figure>{% endif %}
</div>
<h3>Largest clusters</h3>
<table>
  <tr><th class="num">cluster</th><th class="num">size</th>
    {% if dedup.columns.share %}<th class="num">share of corpus</th>{% endif %}
    {% if dedup.columns.min_similarity %}<th class="num">min. similarity to keeper</th>{% endif %}
    <th>keeper id</th>{% if dedup.columns.members %}<th>sample of removed members</th>{% endif %}</tr>
  {% for row in dedup.largest %}<tr><td class="num">{{ row.cluster }}</td><td class="num">{{ row.size | num }}</td>
    {% if dedup.columns.share %}<td class="num">{{ row.share or "" }}</td>{% endif %}
    {% if dedup.columns.min_similarity %}<td class="num">{{ row.min_similarity or "" }}</td>{% endif %}
    <td><code>{{ row.keeper_id }}</code></td>
    {% if dedup.columns.members %}<td>{% for member in row.members or [] %}<code>{{ member }}</code>{% if not loop.last %}, {% endif %}{% endfor %}{% if row.more %}{% if row.members %} and {% endif %}{{ row.more | num }} more{% endif %}</td>{% endif %}</tr>{% endfor %}
</table>
</section>
{% endif %}

{% if contamination %}
<section id="contamination">
<h2>Contamination</h2>
<p class="caption">Documents sharing a {{ contamination.ngram }}-word n-gram with an evaluation
set (lowercased, punctuation removed, whitespace collapsed; an item shorter than that is one
n-gram) are dropped as <code>contaminated</code>, before any other step:
{{ contamination.contaminated | num }} in all. Each is counted under the set of its first match;
"matching" counts every document containing an n-gram of the set.</p>
<table>
  <tr><th>evaluation set</th><th class="num">items</th><th class="num">short items</th>
    <th class="num">n-grams</th><th class="num">dropped</th><th class="num">matching</th></tr>
  {% for name, info in contamination.sets.items() %}
  <tr><td><code>{{ name }}</code></td><td class="num">{{ info["items"] | num }}</td>
    <td class="num">{{ info.short_items | num }}</td><td class="num">{{ info.ngrams | num }}</td>
    <td class="num">{{ info.documents | num }}</td><td class="num">{{ info.matched | num }}</td></tr>
  {% endfor %}
</table>
</section>
{% endif %}

{% if steps %}
<section id="selection">
<h2>Selection</h2>
<p class="caption">Steps in order; each sees only the rows the previous one kept.</p>
<table>
  <tr><th>#</th><th>role</th><th>step</th><th>parameters</th><th>budget</th>
    <th class="num">rows in</th><th class="num">kept</th></tr>
  {% for step in steps %}
  <tr><td>{{ step.number }}</td><td>{{ step.role }}</td><td><code>{{ step.step }}</code></td>
    <td><code>{{ step.params }}</code></td><td>{{ step.budget }}</td>
    <td class="num">{{ step.rows_in | num }}</td><td class="num">{{ step.kept | num }}</td></tr>
  {% endfor %}
</table>
{% for step in steps if step.plots or step.scalars or step.tables or step.notes %}
<h3>{{ step.number }}. <code>{{ step.step }}</code> ({{ step.role }})</h3>
{% for note in step.notes %}<p class="caption">{{ note }}</p>{% endfor %}
{% if step.scalars %}<table>
  {% for key, value in step.scalars %}<tr><td>{{ key }}</td><td><code>{{ value }}</code></td></tr>{% endfor %}
</table>{% endif %}
{% for plot in step.plots %}<figure class="wide"><img class="plot" alt="{{ plot.alt }}" src="{{ plot.uri }}"></figure>{% endfor %}
{% for table in step.tables %}
<details{% if table.open %} open{% endif %}><summary>{{ table.title }}</summary>
<table>
  <tr>{% for head in table.header %}<th class="num">{{ head }}</th>{% endfor %}</tr>
  {% for row in table.rows %}<tr>{% for cell in row %}<td class="num">{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>
</details>
{% endfor %}
{% endfor %}
</section>
{% endif %}

{% if curve %}
<section id="pruning-curve">
<h2>Pruning curve</h2>
{% for warning in curve.warnings %}<div class="note eval-warning"><strong>WARNING:</strong> {{ warning }}</div>{% endfor %}
<p class="caption">{{ curve.caption }}</p>
{% for fact in curve.facts %}<p class="caption">{{ fact }}</p>{% endfor %}
<figure class="wide"><img class="plot" alt="pruning curve" src="{{ curve.plot }}"></figure>
{% if curve.table %}
<details><summary>Summary table ({{ curve.table.rows | length }} rows)</summary>
<table>
  <tr>{% for head in curve.table.header %}<th>{{ head }}</th>{% endfor %}</tr>
  {% for row in curve.table.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>
</details>
{% endif %}
</section>
{% endif %}

{% if examples %}
<section id="examples">
<h2>Examples</h2>
<p class="caption">Up to {{ examples_per_reason }} documents per outcome, chosen at random
(deterministically), cut after {{ text_limit | num }} characters.</p>
{% for group in examples %}
<details{% if group.open %} open{% endif %}>
  <summary><span class="{{ group.tag }}">{{ group.title }}</span>
    {% if group.count is not none %} · {{ group.count | num }} document{{ "s" if group.count != 1 }}{% endif %}</summary>
  {% for doc in group.documents %}
  <div class="doc">
    <div class="where">id <code>{{ doc.id }}</code> · {{ doc.where }}{% if doc.detail %} · {{ doc.detail }}{% endif %}</div>
    <pre>{{ doc.text }}</pre>
  </div>
  {% endfor %}
</details>
{% endfor %}
</section>
{% endif %}

<section id="run">
<h2>Run</h2>
{% if stage_times %}<h3>Seconds per stage</h3><table>
  {% for stage, seconds in stage_times %}<tr><td>{{ stage }}</td><td class="num">{{ seconds }}</td></tr>{% endfor %}
</table>{% endif %}
<h3>Inputs</h3>
<table>
  <tr><th>shard</th><th>format</th><th class="num">records</th><th class="num">ingested</th><th class="num">quarantined</th></tr>
  {% for shard in shards.shown %}<tr><td><code>{{ shard.name }}</code></td><td>{{ shard.format }}</td>
    <td class="num">{{ shard.rows_in | num }}</td><td class="num">{{ shard.ingested | num }}</td>
    <td class="num">{{ shard.quarantined | num }}</td></tr>{% endfor %}
</table>
{% if shards.left_out %}<p>{{ shards.shown | length }} of {{ shards.total | num }} inputs listed
(damaged and most quarantined first); {{ shards.left_out | num }} more are in
<code>manifest.json</code>. Formats: {% for fmt, n in shards.formats.items() %}{{ fmt }}
{{ n | num }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}
{% if skipped %}<h3 id="skipped">Damaged inputs, skipped</h3>
<p>These files broke off or are corrupt; the records read before the damage count as input
(<code>input.on_unreadable: skip</code>).</p>
<table>
  <tr><th>file</th><th class="num">records read</th><th>error</th></tr>
  {% for item in skipped %}<tr><td><code>{{ item.path }}</code></td><td class="num">{{ item.rows_read | num }}</td>
    <td>{{ item.error }}</td></tr>{% endfor %}
</table>{% endif %}
{% if versions %}<h3>Versions</h3><table>
  {% for name, version in versions %}<tr><td>{{ name }}</td><td>{{ version }}</td></tr>{% endfor %}
</table>{% endif %}
<p class="caption">Full configuration, input fingerprints and counts: <code>manifest.json</code>;
dataset card: <code>README.md</code>. Rebuild this page with <code>thresher report {{ run_dir }}</code>.</p>
</section>
</main>
</body>
</html>
"""
