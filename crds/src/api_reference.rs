//! The API reference (`docs/api-reference.md`), generated from the CRD's OpenAPI schema so it
//! can never drift from what the API server validates: every field with its type, default,
//! limits and documentation, and every CEL rule with the message a user sees.

use std::fmt::Write;

use serde_json::Value;

use crate::crd;

/// Fields whose type is a standard Kubernetes object: linked, not expanded (their own
/// reference is the Kubernetes API documentation).
const KUBERNETES_TYPES: &[(&str, &str, &str)] = &[
    (
        "spec.affinity",
        "Affinity",
        "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling",
    ),
    (
        "spec.resources",
        "ResourceRequirements",
        "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#resources",
    ),
    (
        "spec.tolerations",
        "[]Toleration",
        "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling",
    ),
    (
        "spec.networkPolicy.controlFrom",
        "[]NetworkPolicyPeer",
        "https://kubernetes.io/docs/reference/kubernetes-api/policy-resources/network-policy-v1/#NetworkPolicySpec",
    ),
    (
        "spec.networkPolicy.bulkFrom",
        "[]NetworkPolicyPeer",
        "https://kubernetes.io/docs/reference/kubernetes-api/policy-resources/network-policy-v1/#NetworkPolicySpec",
    ),
    (
        "spec.networkPolicy.metricsFrom",
        "[]NetworkPolicyPeer",
        "https://kubernetes.io/docs/reference/kubernetes-api/policy-resources/network-policy-v1/#NetworkPolicySpec",
    ),
    (
        "status.conditions",
        "[]Condition",
        "https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/",
    ),
];

/// One documented field.
struct Row {
    path: String,
    kind: String,
    default: String,
    description: String,
}

/// The Markdown API reference of `DiLoCoServer`, exactly as committed in
/// `docs/api-reference.md`.
pub fn api_reference_markdown() -> String {
    // A derived CRD always converts to JSON: it holds only strings, numbers, maps and lists.
    let crd = serde_json::to_value(crd()).expect("a CRD always converts to JSON");
    let spec = &crd["spec"];
    let version = &spec["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let group = spec["group"].as_str().unwrap_or_default();
    let kind = spec["names"]["kind"].as_str().unwrap_or_default();

    let mut out = String::new();
    let _ = writeln!(out, "# API reference: {kind}\n");
    out.push_str(
        "<!-- Generated from the CRD by `make crds` (crds/src/api_reference.rs); a test fails when \
         it is stale. Do not edit by hand. -->\n\n",
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| apiVersion | `{group}/{}` |",
        version["name"].as_str().unwrap_or_default()
    );
    let _ = writeln!(out, "| kind | `{kind}` |");
    let _ = writeln!(out, "| scope | {} |", text(&spec["scope"]));
    let names = &spec["names"];
    let _ = writeln!(
        out,
        "| names | `{}`, `{}`, short `{}`, category `{}` |",
        text(&names["plural"]),
        text(&names["singular"]),
        join(&names["shortNames"]),
        join(&names["categories"])
    );
    out.push_str(
        "\n`kubectl get dls` prints these columns:\n\n| column | from | shown |\n|---|---|---|\n",
    );
    for column in version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let shown = if column["priority"].as_i64().unwrap_or(0) > 0 {
            "with `-o wide`"
        } else {
            "always"
        };
        let _ = writeln!(
            out,
            "| {} | `{}` | {shown} |",
            text(&column["name"]),
            text(&column["jsonPath"])
        );
    }
    out.push_str(
        "\nAnnotations (GitOps nonces: each new value triggers the action once; the handled value \
         is recorded in status): `diloco.dev/rotate-token`, `diloco.dev/rotate-certificates`, \
         `diloco.dev/rotate-ca`. See [operations.md](operations.md).\n",
    );
    for section in ["spec", "status"] {
        let node = &schema["properties"][section];
        let _ = writeln!(
            out,
            "\n## {section}\n\n{}\n",
            paragraph(&node["description"])
        );
        let mut rows = Vec::new();
        let mut rules = Vec::new();
        collect(node, section, &mut rows, &mut rules);
        out.push_str("| field | type | default | description |\n|---|---|---|---|\n");
        for row in rows {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                row.path, row.kind, row.default, row.description
            );
        }
        if !rules.is_empty() {
            let _ = writeln!(
                out,
                "\nValidation rules the API server enforces on `{section}` (CEL); a violating \
                 object is rejected with the message:\n\n| on | rule | message |\n|---|---|---|"
            );
            for (path, rule, message) in rules {
                let _ = writeln!(out, "| `{path}` | `{}` | {message} |", cell(&rule));
            }
        }
    }
    out
}

/// Appends the rows and CEL rules of `node` (at `path`) and of everything under it.
fn collect(
    node: &Value,
    path: &str,
    rows: &mut Vec<Row>,
    rules: &mut Vec<(String, String, String)>,
) {
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        rules.push((
            path.to_string(),
            text(&rule["rule"]),
            text(&rule["message"]),
        ));
    }
    let Some(properties) = node["properties"].as_object() else {
        return;
    };
    for (name, child) in properties {
        let child_path = format!("{path}.{name}");
        let kubernetes = KUBERNETES_TYPES
            .iter()
            .find(|(field, _, _)| *field == child_path);
        let kind = match kubernetes {
            Some((_, type_name, link)) => format!("[{type_name}]({link})"),
            None => type_of(child),
        };
        let mut description = paragraph(&child["description"]);
        let limits = limits(child);
        if !limits.is_empty() {
            let _ = write!(description, " *{limits}.*");
        }
        rows.push(Row {
            path: child_path.clone(),
            kind,
            default: default_of(child),
            description,
        });
        if kubernetes.is_some() {
            continue;
        }
        let element = if child["type"] == "array" {
            &child["items"]
        } else {
            child
        };
        let element_path = if child["type"] == "array" {
            format!("{child_path}[]")
        } else {
            child_path
        };
        collect(element, &element_path, rows, rules);
    }
}

fn type_of(node: &Value) -> String {
    if node["x-kubernetes-int-or-string"] == true {
        return "quantity (int or string)".into();
    }
    match node["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&node["items"])),
        Some("object") if node["additionalProperties"].is_object() => {
            format!("map[string]{}", type_of(&node["additionalProperties"]))
        }
        Some(kind) => kind.to_string(),
        None => "any".into(),
    }
}

/// A scalar default as JSON; object defaults are the defaults of their fields.
fn default_of(node: &Value) -> String {
    match &node["default"] {
        Value::Null | Value::Object(_) => String::new(),
        Value::Array(items) if items.is_empty() => "`[]`".into(),
        value => format!("`{value}`"),
    }
}

/// Enums, ranges, lengths and immutability, in words.
fn limits(node: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(values) = node["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| format!("`{}`", text(v))).collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    let number = |key: &str| node[key].as_f64().map(|n| format!("{n}"));
    match (number("minimum"), number("maximum")) {
        (Some(min), Some(max)) => parts.push(format!("{min} to {max}")),
        (Some(min), None) => parts.push(format!("at least {min}")),
        (None, Some(max)) => parts.push(format!("at most {max}")),
        (None, None) => {}
    }
    if let Some(max) = node["maxLength"].as_u64() {
        parts.push(format!("at most {max} characters"));
    }
    if let Some(pattern) = node["pattern"].as_str() {
        parts.push(format!("matches `{}`", cell(pattern)));
    }
    let immutable = node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|rule| rule["rule"] == "self == oldSelf");
    if immutable {
        parts.push("immutable".into());
    }
    parts.join("; ")
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn join(value: &Value) -> String {
    let items: Vec<String> = value.as_array().into_iter().flatten().map(text).collect();
    items.join("`, `")
}

/// A description as one table-safe paragraph.
fn paragraph(value: &Value) -> String {
    cell(&text(value).split_whitespace().collect::<Vec<_>>().join(" "))
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed reference is what readers see; it must match the types. Regenerate with
    /// `make crds`.
    #[test]
    fn committed_api_reference_matches_the_types() {
        let committed = include_str!("../../docs/api-reference.md");
        assert!(
            committed == api_reference_markdown(),
            "docs/api-reference.md is stale: run `make crds` and commit the result"
        );
    }

    /// Every spec field a user can set is in the reference, with its default and its rules.
    #[test]
    fn reference_lists_fields_defaults_and_rules() {
        let reference = api_reference_markdown();
        for expected in [
            "| `spec.control.port` | integer | `8512` |",
            "| `spec.training.mode` | string | `\"sync\"` |",
            "one of `sync`, `async`",
            "| `spec.affinity` | [Affinity](",
            "| `status.tokenRotation.previousValidUntil` | string |",
            "bulk.auth requires bulk.tls",
        ] {
            assert!(reference.contains(expected), "missing {expected:?}");
        }
        // Kubernetes types are linked, not expanded.
        assert!(!reference.contains("spec.affinity.nodeAffinity"));
    }
}
