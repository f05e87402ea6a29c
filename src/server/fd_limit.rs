//! The open-file limit: raised at start from its soft value to the hard one, so that the
//! connection cap, not the default soft limit (often 1,024), bounds the clients one server
//! can hold.

/// The soft limit before and after raising it, and the hard limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimits {
    /// The soft limit the process started with.
    pub was: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (the most the soft one may be raised to without privileges).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise() -> std::io::Result<FdLimits> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(FdLimits {
        was,
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the limit and logs the outcome, warning when `max_connections` does not fit in it.
pub fn raise_and_log(max_connections: u32) {
    match raise() {
        Ok(limits) => {
            tracing::info!(
                soft = limits.soft,
                hard = limits.hard,
                "open files: soft limit {} (was {}), hard limit {}",
                limits.soft,
                limits.was,
                limits.hard
            );
            if limits.soft < u64::from(max_connections) {
                tracing::warn!(
                    "--max-connections {max_connections} exceeds the open-file limit {}: the accept loop pauses instead when files run out",
                    limits.soft
                );
            }
        }
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raises_the_soft_limit_to_the_hard_one() {
        let limits = super::raise().expect("getrlimit works");
        assert_eq!(limits.soft, limits.hard);
        assert!(limits.was <= limits.soft);
    }
}
