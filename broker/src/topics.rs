//! Internal topic names, a leaf of the crate (it imports nothing from it).

use sluiceway_core::Error;

/// Whether `name` is reserved for an internal topic: every name starting with `__` (Kafka's
/// convention; today only `__consumer_offsets`). Such topics are not created by clients and not
/// listed by ListTopics / GetMetadata.
pub fn is_internal_topic(name: &str) -> bool {
    name.starts_with("__")
}

/// The error for creating a reserved name.
pub fn internal_topic_error(name: &str) -> Error {
    Error::InvalidTopic {
        name: name.to_owned(),
        reason:
            "names starting with \"__\" are reserved for internal topics such as __consumer_offsets"
                .into(),
    }
}
