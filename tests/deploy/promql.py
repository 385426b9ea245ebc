"""Just enough PromQL reading to list the metric names and label names that an expression uses.

Not a parser: it removes strings, Grafana variables, ranges and offsets, reads label matchers and
grouping clauses, and treats every remaining identifier that is not a function, aggregation or keyword
as a metric name. An identifier it does not know as a function makes it fail, so a typo cannot pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
    | {"quantile", "limitk", "limit_ratio"}
)
FUNCTIONS = frozenset(
    {"abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min"}
    | {"day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor"}
    | {"histogram_quantile", "histogram_avg", "histogram_count", "histogram_sum", "histogram_fraction"}
    | {"holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2"}
    | {"log10", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort"}
    | {"sort_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time"}
    | {"max_over_time", "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time"}
    | {"stdvar_over_time", "last_over_time", "present_over_time"}
)
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
    | {"offset", "inf", "nan"}
)

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?")


@dataclass
class Usage:
    metrics: set[str] = field(default_factory=set)
    # labels in `metric{...}` matchers, per metric
    matcher_labels: dict[str, set[str]] = field(default_factory=dict)
    # labels in by/without/on/ignoring/group_x clauses and in bare {...} selectors
    other_labels: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


def analyse(expr: str) -> Usage:
    """Metric names, label names and functions in one PromQL expression; ValueError on unknown words."""
    usage = Usage()
    # Label values live in strings; strings and Grafana variables carry no names worth checking.
    text = _GRAFANA_VAR.sub("", _STRING.sub('""', expr))
    for match in _SELECTOR.finditer(text):
        name, body = match.group(1), match.group(2)
        labels = set(_MATCHER_LABEL.findall(body)) - {"__name__"}
        if name and name not in KEYWORDS | AGGREGATIONS | FUNCTIONS:
            usage.matcher_labels.setdefault(name, set()).update(labels)
        else:
            usage.other_labels.update(labels)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    for match in _GROUPING.finditer(text):
        usage.other_labels.update(label.strip() for label in match.group(2).split(",") if label.strip())
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", _OFFSET.sub(" ", _RANGE.sub(" ", text)))
    for match in _IDENT.finditer(text):
        word = match.group(0).rstrip("( \t\n")
        if match.group(1):  # followed by "(": a function call or an aggregation
            if word not in FUNCTIONS | AGGREGATIONS:
                raise ValueError(f"unknown PromQL function {word!r} in {expr!r}")
            usage.functions.add(word)
        elif word in AGGREGATIONS:  # `sum by (x) (...)`: the grouping clause was removed above
            usage.functions.add(word)
        elif word not in KEYWORDS:
            usage.metrics.add(word)
    return usage
