//! Who intercepts: `user@host`, recorded on the Service so others see it. Portable: the user
//! from `USER` (Unix) or `USERNAME` (Windows), the host from the operating system.

/// `user@host`, or just the user when the host name cannot be read.
pub(crate) fn owner() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "someone".into());
    let host = hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_default();
    if host.trim().is_empty() {
        user
    } else {
        format!("{user}@{}", host.trim())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_host_as_the_operating_system_does() {
        let host = hostname::get()
            .expect("a host name")
            .into_string()
            .expect("UTF-8");
        assert!(super::owner().ends_with(&format!("@{}", host.trim())));
    }
}
