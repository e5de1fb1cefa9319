//! A subscription's topics as queue tags.
//!
//! SQS tag values hold at most 256 characters, and `status` alone takes eight topics.
//! The list is space-separated in `troupe:topic`, continued in `troupe:topic-2`,
//! `troupe:topic-3` … when it is longer (a topic is never split). A space, unlike a
//! comma, is one of the characters AWS allows in tag values (letters, digits, spaces
//! and `_ . : / = + - @`), and no topic holds one. A queue from before topic lists,
//! `troupe:topic` naming one topic, reads as that one topic.

use std::collections::HashMap;

use troupe_core::{Error, Result};

/// The first (and usually only) tag of the list.
pub(super) const TAG_TOPIC: &str = "troupe:topic";
/// SQS's longest tag value.
const MAX_TAG_VALUE: usize = 256;
/// Tags a list may take (SQS allows 50 per queue, Troupe's other settings take 5).
pub(super) const MAX_TOPIC_TAGS: usize = 10;

/// The tag holding part `i` (0-based) of the list.
pub(super) fn tag_key(i: usize) -> String {
    if i == 0 {
        TAG_TOPIC.to_owned()
    } else {
        format!("{TAG_TOPIC}-{}", i + 1)
    }
}

/// Whether `key` is one of the list's tags.
pub(super) fn is_topic_tag(key: &str) -> bool {
    key == TAG_TOPIC
        || key
            .strip_prefix(TAG_TOPIC)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| n.parse::<usize>().is_ok())
}

/// The tag values for `topics`, in order.
pub(super) fn pack(name: &str, topics: &[String]) -> Result<Vec<String>> {
    let mut values: Vec<String> = Vec::new();
    for topic in topics {
        if topic.contains(char::is_whitespace) || topic.len() > MAX_TAG_VALUE {
            return Err(Error::invalid(
                "subscription",
                format!(
                    "`{name}`: topic `{topic}` cannot be kept in a queue tag: topics are at most {MAX_TAG_VALUE} characters, without spaces"
                ),
            ));
        }
        match values.last_mut() {
            Some(v) if v.len() + 1 + topic.len() <= MAX_TAG_VALUE => {
                v.push(' ');
                v.push_str(topic);
            }
            _ => values.push(topic.clone()),
        }
    }
    if values.len() > MAX_TOPIC_TAGS {
        return Err(Error::invalid(
            "subscription",
            format!(
                "`{name}`: {} topics need {} queue tags, more than the {MAX_TOPIC_TAGS} kept for them: split the subscription",
                topics.len(),
                values.len()
            ),
        ));
    }
    Ok(values)
}

/// The topics a queue's tags list, sorted; `None` when it has none (a queue that is no
/// subscription, or one retired).
pub(super) fn unpack(tags: &HashMap<String, String>) -> Option<Vec<String>> {
    let mut topics: Vec<String> = Vec::new();
    for i in 0..MAX_TOPIC_TAGS {
        let Some(value) = tags.get(&tag_key(i)) else {
            break;
        };
        topics.extend(value.split_whitespace().map(str::to_owned));
    }
    if topics.is_empty() {
        return None;
    }
    topics.sort();
    topics.dedup();
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(values: &[String]) -> HashMap<String, String> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (tag_key(i), v.clone()))
            .collect()
    }

    #[test]
    fn a_list_round_trips_through_tags_within_their_length() {
        let topics: Vec<String> = (0..40)
            .map(|i| format!("troupe.document.topic-number-{i:02}"))
            .collect();
        let values = pack("s", &topics).unwrap();
        assert!(values.len() > 1, "40 long topics need several tags");
        assert!(values.iter().all(|v| v.len() <= MAX_TAG_VALUE));
        assert_eq!(unpack(&tags(&values)).unwrap(), topics);
        assert_eq!(tag_key(0), "troupe:topic");
        assert_eq!(tag_key(2), "troupe:topic-3");
        assert!(is_topic_tag("troupe:topic-3") && is_topic_tag("troupe:topic"));
        assert!(!is_topic_tag("troupe:topics") && !is_topic_tag("troupe:subject-prefix"));
    }

    #[test]
    fn a_queue_from_before_lists_reads_as_its_one_topic() {
        let old = HashMap::from([
            (
                "troupe:topic".to_owned(),
                "troupe.document.uploaded".to_owned(),
            ),
            ("troupe:backoff-base-ms".to_owned(), "200".to_owned()),
        ]);
        assert_eq!(unpack(&old).unwrap(), ["troupe.document.uploaded"]);
        assert_eq!(unpack(&HashMap::new()), None);
    }

    #[test]
    fn topics_a_tag_cannot_hold_are_refused_with_the_subscription() {
        let err = pack("status", &["a b".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("`status`") && err.contains("`a b`"), "{err}");
        let err = pack("status", &["x".repeat(300)]).unwrap_err().to_string();
        assert!(err.contains("256"), "{err}");
        let many: Vec<String> = (0..11).map(|i| format!("{i}{}", "t".repeat(250))).collect();
        let err = pack("status", &many).unwrap_err().to_string();
        assert!(err.contains("split the subscription"), "{err}");
    }
}
