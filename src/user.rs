//! The user-name rule of DESIGN.md, in one place: 1–255 printable
//! characters, no control character, no colon. A name that breaks it is
//! refused at creation, at sign-in and in `[selfservice] admins`, so it can
//! never be smuggled into an identity header. Imports nothing.

/// True for a clean user name.
pub fn is_valid(user: &str) -> bool {
    let len = user.chars().count();
    (1..=255).contains(&len) && !user.chars().any(|c| c.is_control() || c == ':')
}
