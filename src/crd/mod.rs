//! The operator's custom resources: `LiteLLMUser` (namespaced, written by tenants) and `LiteLLMProxy`
//! (cluster-scoped, written by the platform team).
//!
//! Doc comments on fields are the text `kubectl explain` shows, so they are written for the people who write
//! manifests. Validation lives in the schema (via `schemars` attributes and CEL rules) so that the API server
//! refuses bad input before it ever reaches LiteLLM.

mod cached;
mod proxy;
mod user;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use cached::{CachedUser, MAX_SPEC_METADATA_BYTES, Unreadable};
pub use proxy::*;
pub use user::*;

/// CEL: a duration of a spec (`30d`, `1mo`) is at most 10 years, [`crate::duration::SPEC_MAX`]. Strings the
/// field's pattern refuses pass this rule, so that the API server reports only the pattern for them.
const DURATION_AT_MOST_TEN_YEARS: &str = "!self.matches('^[0-9]+(s|m|h|d|w|mo)$') || \
    int(self.substring(0, size(self) - (self.endsWith('mo') ? 2 : 1))) * (self.endsWith('mo') ? 2592000 : \
    {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}[self.substring(size(self) - 1)]) <= 315360000";
const DURATION_TOO_LONG: &str = "must be at most 3650d (10 years)";

fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    serde_json::from_value(serde_json::json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "properties": {
                "lastTransitionTime": { "format": "date-time", "type": "string" },
                "message": { "type": "string" },
                "observedGeneration": { "type": "integer", "format": "int64", "minimum": 0 },
                "reason": { "type": "string" },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"] },
                "type": { "type": "string" }
            },
            "required": ["lastTransitionTime", "message", "reason", "status", "type"]
        }
    }))
    .unwrap_or_default()
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    serde_json::from_value(serde_json::json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    }))
    .unwrap_or_default()
}

/// `base` followed by `suffix` in at most `max` characters: when too long, `base` is cut and a hash of it
/// keeps the result unique. `base` is a Kubernetes name (lowercase letters, digits, `-` and `.`), so the
/// result is one too, and a valid label value.
pub fn bounded_name(base: &str, suffix: &str, max: usize) -> String {
    if base.len() + suffix.len() <= max {
        return format!("{base}{suffix}");
    }
    let digest = crate::text::sha256_hex(base);
    let tag = &digest[..10];
    let room = max.saturating_sub(suffix.len() + tag.len() + 1);
    let head = base[..room.min(base.len())].trim_end_matches(['-', '.']);
    format!("{head}-{tag}{suffix}")
}

/// The operator's CRDs, each with the file under `crds/` that holds it.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![("litellmuser.yaml", LiteLLMUser::crd()), ("litellmproxy.yaml", LiteLLMProxy::crd())]
}

/// A CRD as YAML, as `litellm-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    let mut crd = serde_json::to_value(crd).unwrap_or_default();
    unwrap_descriptions(&mut crd);
    serde_saphyr::to_string(&crd)
}

/// Doc comments are wrapped at 120 columns; `kubectl explain` wraps text itself, so a description keeps only
/// its paragraph breaks.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match inner {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(inner),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_are_fresh() {
        for (file, crd) in crds() {
            let committed =
                std::fs::read_to_string(format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default();
            assert!(
                crd_yaml(&crd).unwrap().trim_end() == committed.trim_end(),
                "crds/{file} is stale: run hack/generate.sh and commit the result"
            );
        }
    }

    #[test]
    fn no_unsigned_integer_formats() {
        for (file, crd) in crds() {
            let yaml = crd_yaml(&crd).unwrap();
            assert!(!yaml.contains("uint32") && !yaml.contains("uint64"), "{file}: the API server warns about uint");
        }
    }

    #[test]
    fn descriptions_have_no_hard_line_breaks() {
        let yaml = crd_yaml(&LiteLLMUser::crd()).unwrap();
        let crd: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let text = spec["properties"]["userId"]["description"].as_str().unwrap();
        assert!(!text.contains('\n') && text.contains("Immutable. When omitted"), "{text}");
    }

    #[test]
    fn bounded_names_fit_and_stay_unique() {
        let dotted = bounded_name(&format!("{}.{}", "a".repeat(50), "b".repeat(30)), "", 63);
        assert!(dotted.len() <= 63 && !dotted.contains(".-"), "{dotted}");
        assert_ne!(bounded_name(&"a".repeat(300), "", 63), bounded_name(&format!("{}b", "a".repeat(299)), "", 63));
        assert_eq!(bounded_name("short", "-x", 63), "short-x");
    }
}
