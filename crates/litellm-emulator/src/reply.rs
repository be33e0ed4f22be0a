//! Answers and LiteLLM's three error shapes (see `shared/testbed/litellm/BEHAVIOUR.md`):
//! **E** `{"error":{"message","type","param","code"}}`, **D** `{"detail":{"error":…}}`, and the 422 list
//! `{"detail":[{"type","loc","msg"}]}`.

use serde_json::{Map, Value, json};

use super::Generation;

/// One HTTP answer: status, JSON body and, for 429, a `Retry-After` in seconds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) retry_after: Option<u64>,
}

impl Reply {
    pub(crate) fn ok(body: Value) -> Self {
        Reply { status: 200, body, retry_after: None }
    }

    /// Shape **D**, FastAPI's own `HTTPException` body.
    pub(crate) fn detail(status: u16, message: impl Into<String>) -> Self {
        Reply { status, body: json!({ "detail": { "error": message.into() } }), retry_after: None }
    }

    /// Shape **E**, LiteLLM's `ProxyException`. `code` is the status as a string.
    pub(crate) fn envelope(status: u16, message: impl Into<String>, kind: &str, param: Param) -> Self {
        let param = match param {
            Param::Null => Value::Null,
            Param::NoneText => Value::from("None"),
            Param::Named(name) => Value::from(name),
            Param::Shown(text) => Value::from(text),
        };
        let error = json!({ "message": message.into(), "type": kind, "param": param, "code": status.to_string() });
        Reply { status, body: json!({ "error": error }), retry_after: None }
    }

    /// The 422 list of a request that failed validation. Older proxies also echo the input (and the allowed
    /// values); newer ones strip it.
    pub(crate) fn invalid(generation: Generation, issues: Vec<Issue>) -> Self {
        let items = issues
            .into_iter()
            .map(|issue| {
                let mut item = Map::new();
                item.insert("type".into(), issue.kind.into());
                item.insert("loc".into(), Value::Array(issue.loc));
                item.insert("msg".into(), issue.msg.into());
                if generation == Generation::Older {
                    item.insert("input".into(), issue.input);
                    if let Some(ctx) = issue.ctx {
                        item.insert("ctx".into(), ctx);
                    }
                }
                Value::Object(item)
            })
            .collect();
        Reply { status: 422, body: json!({ "detail": Value::Array(items) }), retry_after: None }
    }
}

/// The `param` of an **E** body, which varies by version and case (BEHAVIOUR.md, difference 6).
#[derive(Clone, Debug)]
pub(crate) enum Param {
    Null,
    /// The string `"None"`, Python's `str(None)`.
    NoneText,
    Named(&'static str),
    /// A value from the request, such as the key presented.
    Shown(String),
}

impl Generation {
    /// `param` of ordinary **E** errors (404, 409, 400 from handlers): JSON `null` on 1.108.7, the string `"None"`
    /// on 1.80.5.
    pub(crate) fn param(self) -> Param {
        match self {
            Generation::Newer => Param::Null,
            Generation::Older => Param::NoneText,
        }
    }
}

/// One entry of a 422 list.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Issue {
    pub(crate) kind: &'static str,
    pub(crate) loc: Vec<Value>,
    pub(crate) msg: String,
    pub(crate) input: Value,
    pub(crate) ctx: Option<Value>,
}

impl Issue {
    pub(crate) fn new(kind: &'static str, loc: &[&str], msg: impl Into<String>, input: Value) -> Self {
        Issue { kind, loc: loc.iter().map(|part| Value::from(*part)).collect(), msg: msg.into(), input, ctx: None }
    }

    pub(crate) fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }
}

/// The types a request field is validated as, with pydantic's lax coercions (`"10"` is a number, `3.0` an
/// integer). `null` is accepted for every field: all of them are optional in LiteLLM's request models.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Str,
    Float,
    Int,
    Bool,
    /// Any list.
    List,
    /// A list of strings.
    StrList,
    Object,
    /// `user_role`: one of the four roles LiteLLM accepts.
    Role,
}

pub(crate) const ROLES: [&str; 4] = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"];

const ROLE_MESSAGE: &str = "Input should be <LitellmUserRoles.PROXY_ADMIN: 'proxy_admin'>, \
    <LitellmUserRoles.PROXY_ADMIN_VIEW_ONLY: 'proxy_admin_viewer'>, <LitellmUserRoles.INTERNAL_USER: 'internal_user'> \
    or <LitellmUserRoles.INTERNAL_USER_VIEW_ONLY: 'internal_user_viewer'>";

/// Checks the fields of `body` named in `schema`, in schema order (the order pydantic reports them in).
pub(crate) fn check_body(body: &Map<String, Value>, schema: &[(&str, Kind)]) -> Vec<Issue> {
    let mut issues = Vec::new();
    for &(field, kind) in schema {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(value) => issues.extend(check_value(field, kind, value)),
        }
    }
    issues
}

fn check_value(field: &str, kind: Kind, value: &Value) -> Option<Issue> {
    let loc = ["body", field];
    let issue = |kind, msg: &str| Some(Issue::new(kind, &loc, msg, value.clone()));
    match kind {
        Kind::Str if !value.is_string() => issue("string_type", "Input should be a valid string"),
        Kind::Float => match value {
            Value::Number(_) => None,
            Value::String(text) if text.trim().parse::<f64>().is_ok() => None,
            Value::String(_) => {
                issue("float_parsing", "Input should be a valid number, unable to parse string as a number")
            }
            _ => issue("float_type", "Input should be a valid number"),
        },
        Kind::Int => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => None,
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => None,
            Value::Number(_) => {
                issue("int_from_float", "Input should be a valid integer, got a number with a fractional part")
            }
            Value::String(text) if text.trim().parse::<i64>().is_ok() => None,
            Value::String(_) => {
                issue("int_parsing", "Input should be a valid integer, unable to parse string as an integer")
            }
            _ => issue("int_type", "Input should be a valid integer"),
        },
        Kind::Bool if !value.is_boolean() => issue("bool_type", "Input should be a valid boolean"),
        Kind::List if !value.is_array() => issue("list_type", "Input should be a valid list"),
        Kind::StrList => match value {
            Value::Array(items) => items.iter().enumerate().find(|(_, item)| !item.is_string()).map(|(index, item)| {
                let mut issue = Issue::new("string_type", &loc, "Input should be a valid string", item.clone());
                issue.loc.push(index.into());
                issue
            }),
            _ => issue("list_type", "Input should be a valid list"),
        },
        Kind::Object if !value.is_object() => issue("dict_type", "Input should be a valid dictionary"),
        Kind::Role if !value.as_str().is_some_and(|role| ROLES.contains(&role)) => Some(
            Issue::new("literal_error", &loc, ROLE_MESSAGE, value.clone())
                .with_ctx(json!({ "expected": ROLE_MESSAGE.trim_start_matches("Input should be ") })),
        ),
        _ => None,
    }
}

/// Reads the JSON body of a POST and checks the fields `schema` names: the body, or the 422 FastAPI answers.
pub(crate) fn validated_body(
    generation: Generation,
    bytes: &[u8],
    schema: &[(&str, Kind)],
) -> Result<Map<String, Value>, Reply> {
    let body = parse_body(generation, bytes)?;
    let issues = check_body(&body, schema);
    if issues.is_empty() { Ok(body) } else { Err(Reply::invalid(generation, issues)) }
}

/// Reads the JSON body of a POST as an object, answering the 422 FastAPI gives for a missing or broken body.
pub(crate) fn parse_body(generation: Generation, bytes: &[u8]) -> Result<Map<String, Value>, Reply> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let issue = Issue::new("missing", &["body"], "Field required", Value::Null);
        return Err(Reply::invalid(generation, vec![issue]));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Reply::invalid(
            generation,
            vec![Issue::new(
                "model_attributes_type",
                &["body"],
                "Input should be a valid dictionary or object to extract fields from",
                other,
            )],
        )),
        Err(err) => {
            let mut issue = Issue::new("json_invalid", &["body"], "JSON decode error", json!({}))
                .with_ctx(json!({ "error": err.to_string() }));
            issue.loc.push(0.into());
            Err(Reply::invalid(generation, vec![issue]))
        }
    }
}

/// A number as pydantic coerces it (numbers, or strings that hold one).
pub(crate) fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// An integer as pydantic coerces it (`3`, `3.0` or `"3"`).
pub(crate) fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// `null`, `[]` and `{}`: the values `/user/update` ignores for most fields.
pub(crate) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_like_pydantic() {
        let body = json!({"user_role":"boss","max_budget":"abc","tpm_limit":1.5,"models":["a",1],"metadata":[],
                          "rpm_limit":"7","user_alias":null,"spend":"2.5"});
        let Value::Object(body) = body else { unreachable!() };
        let schema = [
            ("user_role", Kind::Role),
            ("max_budget", Kind::Float),
            ("tpm_limit", Kind::Int),
            ("rpm_limit", Kind::Int),
            ("models", Kind::StrList),
            ("metadata", Kind::Object),
            ("user_alias", Kind::Str),
            ("spend", Kind::Float),
        ];
        let kinds: Vec<_> = check_body(&body, &schema).iter().map(|issue| (issue.kind, issue.loc.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                ("literal_error", vec![json!("body"), json!("user_role")]),
                ("float_parsing", vec![json!("body"), json!("max_budget")]),
                ("int_from_float", vec![json!("body"), json!("tpm_limit")]),
                ("string_type", vec![json!("body"), json!("models"), json!(1)]),
                ("dict_type", vec![json!("body"), json!("metadata")]),
            ]
        );
    }

    #[test]
    fn older_proxies_echo_the_input() {
        let issue = Issue::new("missing", &["body", "user_ids"], "Field required", json!({}));
        assert_eq!(
            Reply::invalid(Generation::Newer, vec![issue.clone()]).body,
            json!({"detail":[{"type":"missing","loc":["body","user_ids"],"msg":"Field required"}]})
        );
        assert_eq!(
            Reply::invalid(Generation::Older, vec![issue]).body,
            json!({"detail":[{"type":"missing","loc":["body","user_ids"],"msg":"Field required","input":{}}]})
        );
    }

    #[test]
    fn reads_bodies() {
        assert_eq!(parse_body(Generation::Newer, b"").map_err(|r| r.status), Err(422));
        assert_eq!(parse_body(Generation::Newer, b"not json").map_err(|r| r.status), Err(422));
        assert_eq!(parse_body(Generation::Newer, b"[1]").map_err(|r| r.status), Err(422));
        assert_eq!(parse_body(Generation::Newer, br#"{"a":1}"#).map(|m| m.len()), Ok(1));
    }
}
