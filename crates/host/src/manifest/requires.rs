//! `[component.<id>.tool.troupe] variables_require`: component variables that need
//! others. `variables_require = { webhook_urls = ["webhook_secret"] }` refuses the
//! manifest when `webhook_urls` has a value and `webhook_secret` is empty (blank
//! counts as empty), so a misconfiguration stops the host at start-up rather than
//! surfacing in a function later.

use std::collections::BTreeMap;

/// The field (below `component.<id>.`) and why, when a rule is broken.
pub(super) fn check(
    rules: &BTreeMap<String, Vec<String>>,
    values: &BTreeMap<String, String>,
    templates: &BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    let rule_field = "tool.troupe.variables_require".to_owned();
    let undefined = |name: &str| {
        (
            rule_field.clone(),
            format!("names variable `{name}`, which the component's `variables` do not define"),
        )
    };
    for (when, needs) in rules {
        let set = !values
            .get(when)
            .ok_or_else(|| undefined(when))?
            .trim()
            .is_empty();
        for need in needs {
            let value = values.get(need).ok_or_else(|| undefined(need))?;
            if set && value.trim().is_empty() {
                let env: Vec<String> = referenced(&templates[need])
                    .iter()
                    .map(|v| format!("TROUPE_VARIABLE_{}", v.to_ascii_uppercase()))
                    .collect();
                let how = if env.is_empty() {
                    format!("give `{need}` a value")
                } else {
                    format!("set {}", env.join(" and "))
                };
                return Err((
                    format!("variables.{need}"),
                    format!(
                        "is empty, but `{when}` is set and requires it ({rule_field}): {how}, or leave `{when}` empty"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The application variables a template refers to (`{{ name }}`).
fn referenced(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().to_owned());
        rest = &after[end + 2..];
    }
    out
}
