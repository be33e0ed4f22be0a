#!/usr/bin/env python3
"""Writes the API reference (docs/api-reference.md) from the CRD schemas in crds/*.yaml: every kind and version,
its printer columns, and every field with its type, whether it is required, its default and all of its
validation (enum, pattern, format, bounds, CEL rules with their messages, list and map semantics).

  hack/api-docs.py [--crds DIR] [--out FILE]     write the reference (default crds/ -> docs/api-reference.md)
  hack/api-docs.py --stdout                      print it instead

Generic over every CustomResourceDefinition in the directory. Standard library only, so it carries a small
parser for the block-style YAML that CRD generators and kubectl write; anything outside that subset is an
error, never silently misread. hack/generate.sh runs it, and `hack/generate.sh --check` fails when the
committed reference is stale.
"""

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class YamlError(Exception):
    pass


# ---------------------------------------------------------------- a small block-style YAML parser


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _is_blank(line):
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _strip_comment(text):
    """Removes a trailing ` # comment` outside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"" and (i == 0 or text[i - 1] in " [{,:"):
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] == " "):
            return text[:i].rstrip()
    return text


def _split_key(text):
    """`key: rest` or `key:` -> (key, rest); None when the text is not a mapping entry."""
    if text[:1] in "'\"":
        quote = text[0]
        end = 1
        while True:
            end = text.find(quote, end)
            if end < 0:
                return None
            if quote == "'" and text[end + 1:end + 2] == "'":
                end += 2
                continue
            if quote == '"' and text[end - 1] == "\\":
                end += 1
                continue
            break
        key, rest = _scalar(text[:end + 1]), text[end + 1:]
        if rest == ":" or rest.startswith(": "):
            return key, rest[1:].strip()
        return None
    if text[:1] in "[{":
        return None
    match = re.match(r"^([^\s][^:]*?|[^\s]*?):(\s|$)", text)
    if not match:
        return None
    return match.group(1).strip(), text[match.end():].strip()


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "/": "/", "0": "\0", " ": " ", "e": "\x1b",
            "b": "\b", "f": "\f", "a": "\a", "v": "\v", "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029"}


def _double_quoted(body):
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
            elif nxt in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[nxt]
                out.append(chr(int(body[i + 2:i + 2 + width], 16)))
                i += 2 + width
            else:
                raise YamlError(f"unknown escape \\{nxt}")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _scalar(text):
    text = text.strip()
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise YamlError(f"unterminated or multi-line double-quoted scalar: {text[:60]}")
        return _double_quoted(text[1:-1])
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise YamlError(f"unterminated or multi-line single-quoted scalar: {text[:60]}")
        return text[1:-1].replace("''", "'")
    if text.startswith(("[", "{")):
        value, end = _flow(text, 0)
        if text[end:].strip():
            raise YamlError(f"text after a flow collection: {text}")
        return value
    if text.startswith(("&", "*", "!", "|", ">", "%", "@", "`")):
        raise YamlError(f"unsupported YAML (anchor, alias, tag or reserved indicator): {text[:60]}")
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"0x[0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"0o[0-7]+", text):
        return int(text[2:], 8)
    if re.fullmatch(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?", text):
        return float(text)
    if re.fullmatch(r"[-+]?\.(inf|Inf|INF)", text):
        return float("-inf") if text.startswith("-") else float("inf")
    if text in (".nan", ".NaN", ".NAN"):
        return float("nan")
    return text


def _flow(text, i):
    """A flow sequence or mapping starting at text[i]; returns (value, index after it)."""
    opening = text[i]
    closing = "]" if opening == "[" else "}"
    items, pairs, i = [], {}, i + 1
    while True:
        while i < len(text) and text[i] == " ":
            i += 1
        if i >= len(text):
            raise YamlError(f"unterminated flow collection: {text}")
        if text[i] == closing:
            return (items if opening == "[" else pairs), i + 1
        if text[i] in "[{":
            value, i = _flow(text, i)
            entry = (None, value)
        else:
            j, quote = i, None
            while j < len(text):
                ch = text[j]
                if quote:
                    if ch == quote:
                        quote = None
                elif ch in "'\"":
                    quote = ch
                elif ch in ",]}":
                    break
                j += 1
            token = text[i:j].strip()
            i = j
            split = _split_key(token) if opening == "{" else None
            if split is not None:
                key, rest = split
                entry = (key, _scalar(rest) if rest else None)
            else:
                entry = (None, _scalar(token))
        if opening == "[":
            items.append(entry[1])
        else:
            if entry[0] is None:
                raise YamlError(f"flow mapping entry without a key: {text}")
            pairs[entry[0]] = entry[1]
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == ",":
            i += 1


class _Parser:
    def __init__(self, lines):
        self.lines = lines

    def next_content(self, i):
        while i < len(self.lines) and _is_blank(self.lines[i]):
            i += 1
        return i

    def node(self, i, min_indent):
        """The node whose first line is the next content line at or after i, indented at least min_indent."""
        i = self.next_content(i)
        if i >= len(self.lines) or _indent(self.lines[i]) < min_indent:
            return None, i
        line = self.lines[i]
        indent, text = _indent(line), _strip_comment(line.strip())
        if text == "-" or text.startswith("- "):
            return self.sequence(i, indent)
        if _split_key(text) is not None:
            return self.mapping(i, indent)
        return self.flow_scalar(i, indent - 1, text)

    def flow_scalar(self, i, parent_indent, text):
        """A scalar starting on line i, continued on the lines indented more than its parent (multi-line plain
        and quoted scalars fold line breaks into spaces, and blank lines into line breaks)."""
        j = i + 1
        continuation = []
        while j < len(self.lines):
            line = self.lines[j]
            if line.strip() and _indent(line) <= parent_indent:
                break
            if line.strip().startswith("#") and text[:1] not in "'\"":
                break
            continuation.append(line.strip())
            j += 1
        while continuation and not continuation[-1]:
            continuation.pop()
            j -= 1
        if not continuation:
            return _scalar(text), i + 1
        if text[:1] in "[{":
            return _scalar(" ".join([text] + continuation)), j
        if text[:1] not in "'\"":
            if any(_split_key(c) is not None or c.startswith("- ") for c in continuation if c):
                raise YamlError(f"line {j}: a plain scalar followed by more indented structure")
            text = _strip_comment(text)
        folded = text
        for k, line in enumerate(continuation):
            if not line:
                folded += "\n"
            elif folded.endswith("\n") and k and not continuation[k - 1]:
                folded += line
            elif text[:1] == '"' and folded.endswith("\\") and not folded.endswith("\\\\"):
                folded = folded[:-1] + line  # an escaped line break
            else:
                folded += " " + line
        if text[:1] in "'\"":
            quote = text[0]
            body = folded[1:-1] if folded.endswith(quote) else None
            if body is None:
                raise YamlError(f"line {i + 1}: unterminated quoted scalar")
            return (_double_quoted(body) if quote == '"' else body.replace("''", "'")), j
        return _scalar(folded), j

    def sequence(self, i, indent):
        items = []
        while True:
            i = self.next_content(i)
            if i >= len(self.lines) or _indent(self.lines[i]) != indent:
                break
            text = self.lines[i].strip()
            if not (text == "-" or text.startswith("- ")):
                break
            rest = text[1:].lstrip(" ")
            if not rest or rest.startswith("#"):
                value, i = self.node(i + 1, indent + 1)
            else:
                # The item's content as if it stood on a line of its own, at its column.
                column = indent + len(text) - len(rest)
                self.lines[i] = " " * column + rest
                value, i = self.node(i, column)
            items.append(value)
        return items, i

    def mapping(self, i, indent):
        result = {}
        while True:
            i = self.next_content(i)
            if i >= len(self.lines) or _indent(self.lines[i]) != indent:
                break
            text = _strip_comment(self.lines[i].strip())
            split = _split_key(text)
            if split is None:
                raise YamlError(f"line {i + 1}: expected `key: value`, got {text[:60]}")
            key, rest = split
            if key in result:
                raise YamlError(f"line {i + 1}: duplicate key {key}")
            if rest and rest[0] in "|>":
                result[key], i = self.block_scalar(i, indent, rest)
            elif rest:
                result[key], i = self.flow_scalar(i, indent, rest)
            else:
                nxt = self.next_content(i + 1)
                if nxt < len(self.lines) and _indent(self.lines[nxt]) == indent and \
                        self.lines[nxt].strip().startswith("-"):
                    result[key], i = self.sequence(nxt, indent)  # a sequence not indented under its key
                else:
                    result[key], i = self.node(i + 1, indent + 1)
        return result, i

    def block_scalar(self, i, parent_indent, header):
        match = re.fullmatch(r"([|>])([-+]?)([1-9]?)([-+]?)", header.split(" #")[0].strip())
        if not match:
            raise YamlError(f"line {i + 1}: bad block scalar header {header}")
        style, chomp, explicit = match.group(1), match.group(2) or match.group(4), match.group(3)
        j = i + 1
        raw = []
        while j < len(self.lines) and (not self.lines[j].strip() or _indent(self.lines[j]) > parent_indent):
            raw.append(self.lines[j])
            j += 1
        content = [line for line in raw if line.strip()]
        block_indent = parent_indent + int(explicit) if explicit else (min(map(_indent, content)) if content else 0)
        body = [line[block_indent:] if line.strip() else "" for line in raw]
        while body and not body[-1] and chomp != "+":
            body.pop()
        if style == "|":
            text = "\n".join(body)
        else:
            text, previous = "", None
            for line in body:
                if previous is None:
                    text = line
                elif not line:
                    text += "\n"
                elif line.startswith((" ", "\t")) or (previous and previous.startswith((" ", "\t"))):
                    text += "\n" + line
                elif previous == "":
                    text += line
                else:
                    text += " " + line
                previous = line
        if chomp != "-" and body:
            text += "\n"
        return text, j


def load_all(text):
    """Every document of a YAML stream."""
    docs, current = [], []
    for line in text.splitlines():
        if line.rstrip() == "---" or line.startswith("--- "):
            docs.append(current)
            current = []
        elif line.rstrip() == "...":
            continue
        else:
            if "\t" in line[:_indent(line) + 1] and line.strip():
                raise YamlError("tabs in indentation")
            current.append(line)
    docs.append(current)
    out = []
    for lines in docs:
        parser = _Parser(lines)
        value, end = parser.node(0, 0)
        if parser.next_content(end) < len(lines):
            raise YamlError(f"unparsed content at line {end + 1}: {lines[parser.next_content(end)][:60]}")
        if value is not None:
            out.append(value)
    return out


# ---------------------------------------------------------------- the reference

DOCUMENTED = {"type", "format", "description", "properties", "required", "items", "additionalProperties",
              "default", "nullable", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum",
              "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties",
              "maxProperties", "uniqueItems", "multipleOf", "x-kubernetes-validations",
              "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-list-type",
              "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-embedded-resource",
              "oneOf", "anyOf", "allOf", "not", "title", "example", "externalDocs"}


def cell(text):
    """Text for a Markdown table cell: one line, pipes escaped."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", str(text).strip())]
    return "<br><br>".join(p for p in paragraphs if p).replace("|", "\\|")


def code(value):
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    text = text.replace("|", "\\|")
    ticks = "``" if "`" in text else "`"
    pad = " " if ticks == "``" else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def type_of(schema):
    if schema.get("x-kubernetes-int-or-string"):
        kind = "integer or string"
    elif schema.get("type") == "array":
        kind = f"[]{type_of(schema.get('items', {}))}"
    elif schema.get("type") == "object" or "properties" in schema or "additionalProperties" in schema:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and "properties" not in schema:
            kind = f"map[string]{type_of(extra)}"
        elif schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
            kind = "object (any fields)"
        else:
            kind = "object"
    elif schema.get("x-kubernetes-preserve-unknown-fields"):
        kind = "any"
    else:
        kind = schema.get("type", "any")
    if schema.get("format"):
        kind += f" ({schema['format']})"
    return kind


def validations(schema):
    """Every constraint of one schema node (not of its children), as Markdown fragments."""
    out = []
    if "enum" in schema:
        out.append("one of " + ", ".join(code(v) for v in schema["enum"]))
    if "pattern" in schema:
        out.append(f"pattern {code(schema['pattern'])}")
    for key, word, exclusive in (("minimum", "≥", "exclusiveMinimum"), ("maximum", "≤", "exclusiveMaximum")):
        if key in schema:
            strict = schema.get(exclusive) is True
            out.append(f"{'>' if strict and word == '≥' else '<' if strict else word} {schema[key]}")
    for key, word in (("exclusiveMinimum", ">"), ("exclusiveMaximum", "<")):
        if isinstance(schema.get(key), (int, float)) and not isinstance(schema.get(key), bool):
            out.append(f"{word} {schema[key]}")
    for key, word in (("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥"),
                      ("maxItems", "items ≤"), ("minProperties", "entries ≥"), ("maxProperties", "entries ≤"),
                      ("multipleOf", "multiple of")):
        if key in schema:
            out.append(f"{word} {schema[key]}")
    if schema.get("uniqueItems"):
        out.append("unique items")
    if schema.get("nullable"):
        out.append("may be null")
    if "x-kubernetes-list-type" in schema:
        keys = schema.get("x-kubernetes-list-map-keys")
        out.append(f"list type {code(schema['x-kubernetes-list-type'])}"
                   + (f" keyed by {', '.join(code(k) for k in keys)}" if keys else ""))
    if "x-kubernetes-map-type" in schema:
        out.append(f"map type {code(schema['x-kubernetes-map-type'])}")
    if schema.get("x-kubernetes-embedded-resource"):
        out.append("an embedded Kubernetes object")
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" in schema:
        out.append("unknown fields kept")
    for rule in schema.get("x-kubernetes-validations", []):
        text = f"rule {code(rule['rule'])}"
        if "message" in rule:
            text += f": “{cell(rule['message'])}”"
        if "messageExpression" in rule:
            text += f" (message {code(rule['messageExpression'])})"
        for key in ("reason", "fieldPath", "optionalOldSelf"):
            if key in rule:
                text += f", {key} {code(rule[key])}"
        out.append(text)
    for key in ("oneOf", "anyOf", "allOf", "not"):
        if key in schema:
            out.append(f"{key} {code(schema[key])}")
    for key in sorted(set(schema) - DOCUMENTED):
        out.append(f"{code(key)} {code(schema[key])}")  # not modelled above: shown as it is
    return out


def is_object(schema):
    return "properties" in schema


def row_validations(schema):
    """A field's constraints, with those of its items or values when they are not objects of their own."""
    out = validations(schema)
    items = schema.get("items") if schema.get("type") == "array" else None
    if isinstance(items, dict) and not is_object(items) and validations(items):
        out.append("each item: " + "; ".join(validations(items)))
    values = schema.get("additionalProperties")
    if isinstance(values, dict) and not is_object(values) and not is_object(schema) and validations(values):
        out.append("each value: " + "; ".join(validations(values)))
    return out


def nested(path, schema):
    """The object schemas below a field: itself, or its list items or map values (at any depth)."""
    if is_object(schema):
        yield path, schema
    elif schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        yield from nested(f"{path}[]", schema["items"])
    elif isinstance(schema.get("additionalProperties"), dict):
        yield from nested(f"{path}.<key>", schema["additionalProperties"])


def section(path, schema, lines, has_row):
    """The object at path: its own validation when no table row shows it, a table of its fields, and a
    section for each object below."""
    lines.append(f"#### `{path}`")
    lines.append("")
    if not has_row and schema.get("description"):
        lines.append(cell(schema["description"]))
        lines.append("")
    own = [] if has_row else validations(schema)
    if own:
        lines.append("Validation: " + "; ".join(own) + ".")
        lines.append("")
    required = set(schema.get("required", []))
    properties = schema["properties"]
    lines.append("| field | type | required | default | validation | description |")
    lines.append("|---|---|---|---|---|---|")
    for name in sorted(properties):
        sub = properties[name]
        default = code(sub["default"]) if "default" in sub else ""
        lines.append(f"| `{name}` | {cell(type_of(sub))} | {'yes' if name in required else ''} | {default} | "
                     f"{'; '.join(row_validations(sub))} | {cell(sub.get('description', ''))} |")
    lines.append("")
    for name in sorted(properties):
        for child_path, child in nested(f"{path}.{name}", properties[name]):
            section(child_path, child, lines, has_row=child is properties[name])


def crd_section(crd, source, lines):
    spec = crd["spec"]
    names = spec["names"]
    lines.append(f"## {names['kind']}")
    lines.append("")
    lines.append(f"From [`{source}`](../{source}).")
    lines.append("")
    lines.append("| | |")
    lines.append("|---|---|")
    lines.append(f"| group | `{spec['group']}` |")
    lines.append(f"| versions | {', '.join(code(v['name']) + (' (served)' if v.get('served') else '') + (' (storage)' if v.get('storage') else '') for v in spec['versions'])} |")
    lines.append(f"| scope | {spec['scope']} |")
    lines.append(f"| plural / singular | `{names['plural']}` / `{names.get('singular', names['kind'].lower())}` |")
    if names.get("shortNames"):
        lines.append(f"| short names | {', '.join(code(n) for n in names['shortNames'])} |")
    if names.get("categories"):
        lines.append(f"| categories | {', '.join(code(n) for n in names['categories'])} |")
    lines.append("")
    for version in spec["versions"]:
        api = f"{spec['group']}/{version['name']}"
        lines.append(f"### {names['kind']} `{api}`")
        lines.append("")
        if version.get("deprecated"):
            lines.append(f"Deprecated: {cell(version.get('deprecationWarning', 'yes'))}")
            lines.append("")
        schema = version.get("schema", {}).get("openAPIV3Schema", {})
        if schema.get("description"):
            lines.append(cell(schema["description"]))
            lines.append("")
        subresources = sorted(version.get("subresources", {}))
        if subresources:
            lines.append(f"Subresources: {', '.join(code(s) for s in subresources)}.")
            lines.append("")
        columns = version.get("additionalPrinterColumns", [])
        if columns:
            lines.append("Columns of `kubectl get`:")
            lines.append("")
            lines.append("| column | type | JSONPath | description |")
            lines.append("|---|---|---|---|")
            for column in columns:
                lines.append(f"| {column['name']} | {column['type']} | {code(column['jsonPath'])} | "
                             f"{cell(column.get('description', ''))} |")
            lines.append("")
        own = validations(schema)
        if own:
            lines.append("Validation of the whole object: " + "; ".join(own) + ".")
            lines.append("")
        top = {k: v for k, v in schema.get("properties", {}).items() if k not in ("apiVersion", "kind", "metadata")}
        for name in sorted(top, key=lambda n: (n != "spec", n != "status", n)):
            for path, sub in nested(f".{name}", top[name]):
                section(path, sub, lines, has_row=False)


def render(crd_dir):
    files = sorted(glob.glob(os.path.join(crd_dir, "*.yaml")) + glob.glob(os.path.join(crd_dir, "*.yml")))
    lines = ["# API reference", "",
             "Generated by `hack/api-docs.py` from the CRD schemas in [`crds/`](../crds); do not edit. "
             "`hack/generate.sh` regenerates it and CI fails when it is stale.", ""]
    crds = []
    for path in files:
        with open(path) as f:
            try:
                docs = load_all(f.read())
            except YamlError as err:
                raise SystemExit(f"{path}: {err}")
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append((os.path.relpath(path, ROOT), doc))
    if not crds:
        raise SystemExit(f"no CustomResourceDefinition in {crd_dir}")
    crds.sort(key=lambda c: (c[1]["spec"]["group"], c[1]["spec"]["names"]["kind"]))
    for source, crd in crds:
        lines.append(f"- [{crd['spec']['names']['kind']}](#{crd['spec']['names']['kind'].lower()}) "
                     f"(`{crd['spec']['group']}`)")
    lines.append("")
    for source, crd in crds:
        crd_section(crd, source, lines)
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crds", default=os.path.join(ROOT, "crds"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "api-reference.md"))
    parser.add_argument("--stdout", action="store_true")
    args = parser.parse_args()
    text = render(args.crds)
    if args.stdout:
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
