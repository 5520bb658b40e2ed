//! Keys the proxies keep their own state in, inside the cluster: the migration lease and the
//! shared ACL users. Clients can neither see nor touch them (see `proxy::reserved`), so the
//! cluster still looks like one empty Redis to them, and no client can read password hashes
//! or rewrite the users through the data path.

/// The migration lease (see `migration::lease`).
pub const LEASE_KEY: &str = "slotproxy:migration-lease";
/// The users every proxy shares (see `proxy::acl_sync`).
pub const ACL_KEY: &str = "slotproxy:acl";
/// Both.
pub const RESERVED_KEYS: [&str; 2] = [LEASE_KEY, ACL_KEY];

/// Whether `key` is one of the proxies' own keys.
#[inline]
pub fn is_reserved(key: &[u8]) -> bool {
    RESERVED_KEYS.iter().any(|r| r.as_bytes() == key)
}
