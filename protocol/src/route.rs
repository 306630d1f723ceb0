//! Route names: the `<route>` in `https://<relay>/mcp/<route>`.

/// Why a route name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteNameError {
    #[error("route name is empty")]
    Empty,
    #[error("route name {0:?} is longer than 63 characters")]
    TooLong(String),
    #[error("route name {0:?} may only contain lowercase letters a-z, digits 0-9 and '-'")]
    BadCharacter(String),
    #[error("route name {0:?} must start and end with a letter or digit")]
    BadEdge(String),
}

/// Checks that `name` is a lowercase DNS label: 1-63 characters of `a-z`,
/// `0-9` and `-`, not starting or ending with `-`.
pub fn validate_route_name(name: &str) -> Result<(), RouteNameError> {
    if name.is_empty() {
        return Err(RouteNameError::Empty);
    }
    if name.len() > 63 {
        return Err(RouteNameError::TooLong(name.to_owned()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(RouteNameError::BadCharacter(name.to_owned()));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(RouteNameError::BadEdge(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "demo", "my-db-2", "0", &"x".repeat(63)] {
            assert_eq!(validate_route_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(validate_route_name(""), Err(RouteNameError::Empty));
        assert!(matches!(
            validate_route_name(&"x".repeat(64)),
            Err(RouteNameError::TooLong(_))
        ));
        for bad in ["Demo", "a_b", "a.b", "a/b", "ä", "a b", "..", "%2e"] {
            assert!(
                matches!(
                    validate_route_name(bad),
                    Err(RouteNameError::BadCharacter(_))
                ),
                "{bad}"
            );
        }
        for bad in ["-a", "a-", "-"] {
            assert!(
                matches!(validate_route_name(bad), Err(RouteNameError::BadEdge(_))),
                "{bad}"
            );
        }
    }
}
