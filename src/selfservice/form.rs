//! What the page's forms hold, read into typed values: a POST's urlencoded
//! fields ([`Form`]), the create form ([`CreateForm`]) from a POST or from
//! the fields a step-up kept, and the create form's text (expiry, one limit
//! per line) as `manage` takes it; a `manage` error is named back as the
//! field it is about. Pure: no store, no HTML, no request (`Cx::form` reads
//! the body and checks CSRF before a [`Form`] exists).

use crate::clock::unix_now;
use crate::config::PageExpiry;
use crate::error::PageError;
use crate::limits::LimitError;
use crate::manage::{self, ManageError};
use crate::oidc::Resume;

/// The actions a step-up can interrupt, as [`Resume::action`] names them.
pub(super) const CREATE: &str = "create";
pub(super) const ROTATE: &str = "rotate";

/// A urlencoded form, in field order.
#[derive(Debug)]
pub(super) struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    pub(super) fn parse(body: &[u8]) -> Form {
        Form {
            fields: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The field given at most once; a repeated field is refused (which copy
    /// counts would otherwise depend on the reader).
    pub(super) fn one<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, PageError> {
        let mut found = self.all(name);
        match (found.next(), found.next()) {
            (first, None) => Ok(first),
            (Some(_), Some(_)) | (None, Some(_)) => {
                Err(PageError::BadForm("a form field appears more than once"))
            }
        }
    }

    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the create form holds (defaults, or what was sent when re-shown).
#[derive(Debug, Clone, Default)]
pub(super) struct CreateForm {
    pub(super) name: String,
    pub(super) scopes: Vec<String>,
    pub(super) expires: String,
    pub(super) expires_on: String,
    /// `repo` as typed: one `OWNER/NAME` or `OWNER/*` per line.
    pub(super) repos: String,
    /// `allow_from` as typed: one address or CIDR block per line.
    pub(super) allow_from: String,
    /// The field the error is about, marked `aria-invalid` when re-shown.
    pub(super) bad: Option<&'static str>,
}

impl CreateForm {
    pub(super) fn defaults(expiry: PageExpiry) -> CreateForm {
        CreateForm {
            expires: expiry_value(expiry),
            ..CreateForm::default()
        }
    }

    /// The create form as POSTed (the name trimmed).
    pub(super) fn posted(form: &Form) -> Result<CreateForm, PageError> {
        Ok(CreateForm {
            name: form.one("name")?.unwrap_or_default().trim().to_owned(),
            scopes: form.all("scope").map(str::to_owned).collect(),
            expires: form.one("expires")?.unwrap_or_default().to_owned(),
            expires_on: form.one("expires_on")?.unwrap_or_default().to_owned(),
            repos: form.one("repo")?.unwrap_or_default().to_owned(),
            allow_from: form.one("allow_from")?.unwrap_or_default().to_owned(),
            bad: None,
        })
    }

    /// The create form as a step-up kept it ([`CreateForm::fields`]).
    pub(super) fn resumed(r: &Resume) -> CreateForm {
        CreateForm {
            name: resumed_field(r, "name"),
            scopes: r
                .fields
                .iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .collect(),
            expires: resumed_field(r, "expires"),
            expires_on: resumed_field(r, "expires_on"),
            repos: resumed_field(r, "repo"),
            allow_from: resumed_field(r, "allow_from"),
            bad: None,
        }
    }

    /// The fields as the form sends them (to keep across a step-up).
    pub(super) fn fields(&self) -> Vec<(String, String)> {
        let mut out = vec![("name".to_owned(), self.name.clone())];
        out.extend(self.scopes.iter().map(|s| ("scope".to_owned(), s.clone())));
        out.extend([
            ("expires".to_owned(), self.expires.clone()),
            ("expires_on".to_owned(), self.expires_on.clone()),
            ("repo".to_owned(), self.repos.clone()),
            ("allow_from".to_owned(), self.allow_from.clone()),
        ]);
        out
    }
}

/// The first value of `name` among the fields a step-up kept, or empty.
pub(super) fn resumed_field(r: &Resume, name: &str) -> String {
    r.fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The form's `expires` (`7d`…, `never`, `YYYY-MM-DD`, or `date` with
/// `expires_on`) as seconds from now; `None` = never.
pub(super) fn expiry_seconds(expires: &str, expires_on: &str) -> Result<Option<u64>, String> {
    let expires = expires.trim();
    let date = match expires {
        "never" => return Ok(None),
        "date" => expires_on.trim(),
        d if is_date(d) => d,
        "" => return Err("choose when the password expires".to_owned()),
        d => {
            return match PageExpiry::parse(d) {
                Some(PageExpiry::After(dur)) => Ok(Some(dur.as_secs())),
                Some(PageExpiry::Never) => Ok(None),
                None => Err(format!("\"{d}\" is not an expiry choice")),
            }
        }
    };
    if !is_date(date) {
        return Err("give the expiry date as YYYY-MM-DD".to_owned());
    }
    let midnight = humantime::parse_rfc3339(&format!("{date}T00:00:00Z"))
        .map_err(|_| format!("\"{date}\" is not a date"))?;
    // The password works through the whole of that day (UTC).
    let end = manage::unix(midnight) + 86_400;
    let now = unix_now();
    if end <= now {
        return Err("the expiry date must be in the future".to_owned());
    }
    Ok(Some(end - now))
}

pub(super) fn is_date(s: &str) -> bool {
    s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// A textarea's entries: one per line, blank lines skipped.
pub(super) fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The form field a creation error is about, if one.
pub(super) fn bad_field(e: &ManageError) -> Option<&'static str> {
    match e {
        ManageError::BadName | ManageError::DuplicateName { .. } => Some("name"),
        ManageError::NoScopes { .. } | ManageError::Scope(_) => Some("scope"),
        ManageError::TooLong { .. } | ManageError::ExpiryRequired { .. } => Some("expires"),
        ManageError::Limit(LimitError::BadRepo(_) | LimitError::GitSuffix(..)) => Some("repo"),
        ManageError::Limit(LimitError::BadCidr(_)) => Some("allow_from"),
        _ => None,
    }
}

/// A creation error as the form shows it (the CLI's flag names removed,
/// the form's field named instead).
pub(super) fn form_message(e: &ManageError) -> String {
    match e {
        ManageError::Limit(LimitError::BadRepo(v)) => format!(
            "Repositories (repo): {v:?} is not OWNER/NAME or OWNER/* (one per line)"
        ),
        ManageError::Limit(LimitError::GitSuffix(v, stem)) => {
            format!("Repositories (repo): give {v:?} without \".git\", as {stem}")
        }
        ManageError::Limit(LimitError::BadCidr(v)) => format!(
            "Allowed networks (allow_from): {v:?} is not an address or a CIDR block such as 192.0.2.0/24 (one per line)"
        ),
        ManageError::NoScopes { .. } => "choose at least one scope".to_owned(),
        ManageError::ExpiryRequired { max } => {
            format!("passwords here must expire within {max}: choose an expiry")
        }
        ManageError::DuplicateName { name, .. } => {
            format!("you already have an active app password named {name:?}; choose another name")
        }
        other => other.to_string(),
    }
}

/// The form value for an expiry: `30d`-style when a whole number of days.
fn expiry_value(e: PageExpiry) -> String {
    match e {
        PageExpiry::Never => "never".to_owned(),
        PageExpiry::After(d) if d.as_secs() % 86_400 == 0 => format!("{}d", d.as_secs() / 86_400),
        PageExpiry::After(d) => humantime::format_duration(d).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_choices() {
        assert_eq!(expiry_seconds("never", ""), Ok(None));
        assert_eq!(expiry_seconds("7d", ""), Ok(Some(7 * 86_400)));
        assert!(expiry_seconds("", "").is_err());
        assert!(expiry_seconds("soon", "").is_err());
        assert!(expiry_seconds("date", "2001-01-01").is_err());
        assert!(expiry_seconds("date", "01/01/2999").is_err());
        let far = expiry_seconds("2999-01-01", "").unwrap().unwrap();
        assert!(far > 900 * 365 * 86_400);
        assert_eq!(
            expiry_seconds("date", "2999-01-01").unwrap().unwrap() / 86_400,
            far / 86_400
        );
    }

    #[test]
    fn textarea_lines_skip_blanks_and_trim() {
        assert_eq!(
            lines(" alice/a \r\n\n\tbob/*\n  "),
            ["alice/a".to_owned(), "bob/*".to_owned()]
        );
        assert!(lines("").is_empty());
    }
}
