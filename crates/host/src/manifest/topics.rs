//! A queue trigger's topics (`topic` or `topics`) and the subscriptions triggers
//! replace (`replaces`): what they may hold, with the field to name when they do not.

use std::collections::HashSet;

use super::SubscriptionTrigger;
use super::raw::RawQueueTrigger;

/// A queue trigger's topics: `topic = "…"` or `topics = ["…", …]`, exactly one of the
/// two; every name non-empty, listed once, without whitespace (queue tags keep the
/// list space-separated on SQS). Errors name the field (`topics[2]`).
pub(super) fn of(t: &RawQueueTrigger) -> Result<Vec<String>, (String, String)> {
    let topics: Vec<String> = match (&t.topic, &t.topics) {
        (Some(_), Some(_)) => {
            return Err((
                "topics".into(),
                "is set together with `topic`: keep one (`topics` takes a list)".into(),
            ));
        }
        (None, None) => {
            return Err((
                "topic".into(),
                "is missing: set `topic = \"…\"`, or `topics = [\"…\", …]` for several".into(),
            ));
        }
        (Some(one), None) => vec![one.clone()],
        (None, Some(list)) if list.is_empty() => {
            return Err((
                "topics".into(),
                "is empty: list the topics the component handles".into(),
            ));
        }
        (None, Some(list)) => list.clone(),
    };
    let field = |j: usize| {
        if t.topic.is_some() {
            "topic".to_owned()
        } else {
            format!("topics[{j}]")
        }
    };
    for (j, topic) in topics.iter().enumerate() {
        if topic.trim().is_empty() {
            return Err((field(j), "must not be empty".into()));
        }
        if topic.contains(char::is_whitespace) {
            return Err((
                field(j),
                format!("`{topic}`: topic names may not contain whitespace"),
            ));
        }
        if topics[..j].contains(topic) {
            return Err((field(j), format!("`{topic}` is listed twice")));
        }
    }
    Ok(topics)
}

/// Each name in a `replaces` list is a subscription that no trigger declares and that
/// only one trigger replaces: `(trigger, index, why)` otherwise.
pub(super) fn check_replaces(
    subscriptions: &[SubscriptionTrigger],
) -> Result<(), (usize, usize, String)> {
    let declared: HashSet<&str> = subscriptions
        .iter()
        .map(|t| t.subscription.name.as_str())
        .collect();
    let mut taken = HashSet::new();
    // Queue triggers come first, in manifest order.
    for (i, t) in subscriptions.iter().enumerate() {
        for (j, old) in t.replaces.iter().enumerate() {
            if old.trim().is_empty() {
                return Err((i, j, "must not be empty".into()));
            }
            if declared.contains(old.as_str()) {
                return Err((
                    i,
                    j,
                    format!(
                        "`{old}` is declared by a trigger of this manifest: a subscription cannot replace one that is still in use"
                    ),
                ));
            }
            if !taken.insert(old.as_str()) {
                return Err((
                    i,
                    j,
                    format!("`{old}` is replaced twice: one subscription takes over its messages"),
                ));
            }
        }
    }
    Ok(())
}
