//! Docker's default capability set, applied as runc applies it.

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities Docker grants a container by default.
pub const DEFAULT: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Drops every capability outside [`DEFAULT`] from the bounding set. Call before changing
/// uid (it needs `CAP_SETPCAP`).
pub fn drop_bounding() -> Result<(), String> {
    let keep: CapsHashSet = DEFAULT.iter().copied().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("drop {cap} from bounding set: {e}"))?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets to [`DEFAULT`]; call after the uid
/// change (made with keep-caps). A non-root command loses them at `execve`, as in Docker.
pub fn set_default() -> Result<(), String> {
    let keep: CapsHashSet = DEFAULT.iter().copied().collect();
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        // Lower effective first only when it is a superset; set() handles both directions
        // because permitted still holds everything at this point.
        caps::set(None, set, &keep).map_err(|e| format!("set {set:?} capabilities: {e}"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient capabilities: {e}"))?;
    Ok(())
}
