//! Access control lists, Kafka's model (`kafka.security.authorizer.AclAuthorizer`): a binding
//! says that a principal may (allow) or may not (deny) perform an operation on the resources a
//! pattern names. Pure: parsing, validation and the decision ([`authorize`]); the broker stores
//! bindings in the registry and calls [`authorize`] on every request.
//!
//! - Resources: `Topic`, `Group` or `Cluster` (the one cluster resource is named
//!   `kafka-cluster`, as in Kafka). A pattern is `Literal` (the name, or `*` for every resource
//!   of the type) or `Prefixed` (every name starting with it).
//! - Operations: `Read`, `Write`, `Create`, `Delete`, `Describe`, `Alter`, and `All`. As in
//!   Kafka, an allowed `Read`, `Write`, `Delete` or `Alter` implies `Describe`.
//! - Principals: `User:NAME`, or `User:*` for everyone. Hosts: only `*` (the broker does not
//!   filter by address).
//! - **The decision**: a matching deny wins over any allow; else a matching allow allows; else,
//!   when no binding at all names the resource, `allow.everyone.if.no.acl.found` decides; else
//!   deny. Super users are allowed before any of this (the broker's check).
//!
//! Compiled without features: the admin client sends and receives these types.

use std::fmt;

use crate::error::{Error, Result};
use crate::limits::ACL_NAME_BYTES_MAX;

/// The name of the one cluster resource.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "server", derive(serde::Serialize, serde::Deserialize))]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant),+];

            /// Kafka's name (as `kafka-acls.sh` prints it).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the name in any case.
            pub fn parse(what: &str, v: &str) -> Result<$name> {
                $name::ALL_VALUES
                    .iter()
                    .copied()
                    .find(|x| x.name().eq_ignore_ascii_case(v.trim()))
                    .ok_or_else(|| {
                        let names: Vec<&str> = $name::ALL_VALUES.iter().map(|x| x.name()).collect();
                        Error::InvalidArgument(format!(
                            "{v:?} is not a {what}; allowed: {}",
                            names.join(", ")
                        ))
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum!(
    /// What an ACL protects.
    ResourceType { Topic => "Topic", Group => "Group", Cluster => "Cluster" }
);
named_enum!(
    /// How a pattern's name matches resource names.
    PatternType { Literal => "Literal", Prefixed => "Prefixed" }
);
named_enum!(
    /// Kafka's operations (the subset Sluiceway's requests use).
    AclOperation {
        All => "All",
        Read => "Read",
        Write => "Write",
        Create => "Create",
        Delete => "Delete",
        Describe => "Describe",
        Alter => "Alter",
        // Replication between brokers: a follower's fetch and OffsetForLeaderEpoch (Kafka's
        // CLUSTER_ACTION on the cluster; the inter-broker user is a super user).
        ClusterAction => "ClusterAction",
    }
);
named_enum!(
    /// Allow or deny.
    AclPermission { Allow => "Allow", Deny => "Deny" }
);

/// The resources a binding applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "server", derive(serde::Serialize, serde::Deserialize))]
pub struct ResourcePattern {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern_type: PatternType,
}

impl ResourcePattern {
    /// Whether this pattern names resource `name` of type `rtype`.
    pub fn matches(&self, rtype: ResourceType, name: &str) -> bool {
        self.resource_type == rtype
            && match self.pattern_type {
                PatternType::Literal => self.name == name || self.name == "*",
                PatternType::Prefixed => name.starts_with(&self.name),
            }
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.resource_type, self.pattern_type, self.name
        )
    }
}

/// Who may (not) do what, for one pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "server", derive(serde::Serialize, serde::Deserialize))]
pub struct AclEntry {
    /// `User:NAME` or `User:*`.
    pub principal: String,
    /// Only `*`.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// A pattern and one entry: what `sluiceway acl add` creates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "server", derive(serde::Serialize, serde::Deserialize))]
pub struct AclBinding {
    pub pattern: ResourcePattern,
    pub entry: AclEntry,
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {} from host {}",
            self.entry.principal,
            self.entry.permission,
            self.entry.operation,
            self.pattern,
            self.entry.host
        )
    }
}

impl AclBinding {
    /// A binding for `principal` from any host (`*`).
    pub fn new(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        operation: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern {
                resource_type,
                name: name.to_owned(),
                pattern_type,
            },
            entry: AclEntry {
                principal: principal.to_owned(),
                host: "*".to_owned(),
                operation,
                permission,
            },
        }
    }

    /// Checks every field: a principal `User:NAME` (or `User:*`), host `*`, a resource name
    /// within bounds, the cluster resource named `kafka-cluster`.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        match self.entry.principal.strip_prefix("User:") {
            Some(n) if !n.is_empty() && n.len() <= ACL_NAME_BYTES_MAX => {}
            _ => {
                return bad(format!(
                    "principal {:?} is not User:NAME (or User:*)",
                    self.entry.principal
                ));
            }
        }
        if self.entry.host != "*" {
            return bad(format!(
                "host {:?}: only * is supported (ACLs apply from every host)",
                self.entry.host
            ));
        }
        let name = &self.pattern.name;
        if name.is_empty() || name.len() > ACL_NAME_BYTES_MAX {
            return bad(format!(
                "resource name {name:?} must have 1..={ACL_NAME_BYTES_MAX} bytes"
            ));
        }
        if self.pattern.resource_type == ResourceType::Cluster
            && !(name == CLUSTER_RESOURCE_NAME && self.pattern.pattern_type == PatternType::Literal)
        {
            return bad(format!(
                "the cluster resource is the literal name {CLUSTER_RESOURCE_NAME:?}"
            ));
        }
        if self.pattern.pattern_type == PatternType::Prefixed && name == "*" {
            return bad("a prefixed pattern cannot be *; use a literal *".into());
        }
        Ok(())
    }
}

/// Whether operation `granted` in an allow binding covers `wanted`.
fn allow_covers(granted: AclOperation, wanted: AclOperation) -> bool {
    granted == wanted
        || granted == AclOperation::All
        || (wanted == AclOperation::Describe
            && matches!(
                granted,
                AclOperation::Read
                    | AclOperation::Write
                    | AclOperation::Delete
                    | AclOperation::Alter
            ))
}

fn principal_matches(entry: &str, principal: &str) -> bool {
    entry == principal || entry == "User:*"
}

/// Kafka's decision for `principal` performing `op` on resource `rtype` `name` (module docs).
/// Super users are the caller's check.
pub fn authorize<'a>(
    acls: impl IntoIterator<Item = &'a AclBinding> + Clone,
    principal: &str,
    op: AclOperation,
    rtype: ResourceType,
    name: &str,
    allow_if_no_acl_found: bool,
) -> bool {
    let mut any = false;
    let mut allowed = false;
    for b in acls {
        if !b.pattern.matches(rtype, name) {
            continue;
        }
        any = true;
        if !principal_matches(&b.entry.principal, principal) {
            continue;
        }
        match b.entry.permission {
            AclPermission::Deny
                if b.entry.operation == op || b.entry.operation == AclOperation::All =>
            {
                return false;
            }
            AclPermission::Deny => {}
            AclPermission::Allow => allowed |= allow_covers(b.entry.operation, op),
        }
    }
    allowed || (!any && allow_if_no_acl_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(
        rtype: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding::new(rtype, name, pattern, principal, op, permission)
    }

    #[test]
    fn deny_wins_prefixes_match_and_reads_imply_describe() {
        use AclOperation::*;
        use AclPermission::*;
        use PatternType::*;
        use ResourceType::*;
        let acls = [
            b(Topic, "orders-", Prefixed, "User:alice", Read, Allow),
            b(Topic, "orders-secret", Literal, "User:alice", All, Deny),
            b(Topic, "*", Literal, "User:bob", Write, Allow),
        ];
        let ok = |p: &str, op, name: &str| authorize(&acls, p, op, Topic, name, false);
        assert!(ok("User:alice", Read, "orders-eu"));
        assert!(ok("User:alice", Describe, "orders-eu"));
        assert!(!ok("User:alice", Write, "orders-eu"));
        assert!(!ok("User:alice", Read, "orders-secret"));
        assert!(!ok("User:alice", Read, "payments"));
        assert!(ok("User:bob", Write, "payments"));
        assert!(!ok("User:carol", Read, "orders-eu"));
        // No binding names groups at all: allow.everyone.if.no.acl.found decides.
        assert!(!authorize(&acls, "User:carol", Read, Group, "g", false));
        assert!(authorize(&acls, "User:carol", Read, Group, "g", true));
        // A binding names the resource (for bob): carol is not allowed even with the flag.
        assert!(!authorize(&acls, "User:carol", Read, Topic, "x", true));
    }

    #[test]
    fn bindings_are_validated() {
        use AclOperation::*;
        use AclPermission::*;
        use PatternType::*;
        use ResourceType::*;
        assert!(
            b(Topic, "t", Literal, "User:a", Read, Allow)
                .validate()
                .is_ok()
        );
        assert!(
            b(Topic, "t", Literal, "alice", Read, Allow)
                .validate()
                .is_err()
        );
        assert!(
            b(Cluster, "c", Literal, "User:a", Create, Allow)
                .validate()
                .is_err()
        );
        assert!(
            b(Topic, "*", Prefixed, "User:a", Read, Allow)
                .validate()
                .is_err()
        );
        let mut x = b(Topic, "t", Literal, "User:a", Read, Allow);
        x.entry.host = "10.0.0.1".into();
        assert!(x.validate().is_err());
        assert_eq!(AclOperation::parse("operation", "write").unwrap(), Write);
        assert!(AclOperation::parse("operation", "IdempotentWrite").is_err());
    }
}
