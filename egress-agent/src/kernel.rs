//! The oldest kernel the datapath supports, and the check that the running one is not older.
//!
//! Linux 5.10 is the floor: `cgroup/sock_create`, `sock_addr` and `cgroup_skb` programs can all
//! use socket storage there, `cgroup_skb` has the cgroup-id helpers, and the verifier accepts
//! the bounded loops of the DNS parser. `cargo xtask test` runs the datapath tests on Debian's
//! 5.10, 6.1 and 6.12 and on the host's kernel.

use std::fmt;

use crate::datapath::DatapathError;

/// The minimum `(major, minor)`.
pub const MINIMUM: (u32, u32) = (5, 10);

/// A kernel release (`uname -r`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The release string.
    pub text: String,
    /// Its `(major, minor)`, when it parses.
    pub version: Option<(u32, u32)>,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses `major.minor` from a release such as `5.10.0-32-amd64`.
pub fn parse(text: &str) -> Release {
    let mut parts = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let version = match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => major.parse().ok().zip(minor.parse().ok()),
        _ => None,
    };
    Release {
        text: text.to_owned(),
        version,
    }
}

/// The running kernel, or an error when it is older than [`MINIMUM`].
pub fn check() -> Result<Release, DatapathError> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = parse(text.trim());
    match release.version {
        Some(version) if version < MINIMUM => Err(DatapathError::KernelTooOld {
            found: release.text,
            minimum: format!("{}.{}", MINIMUM.0, MINIMUM.1),
        }),
        _ => Ok(release),
    }
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
