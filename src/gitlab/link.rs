//! The keyset `Link: <…>; rel="next"` header.
//!
//! GitLab builds the link from its configured external URL, which is often not the address the
//! exporter talks to (an internal service name, another port, a proxy). So only the part after
//! `/api/v4/` is kept and later joined to the configured base URL: the token never travels to a
//! host the operator did not configure.

use thiserror::Error;

use crate::model::text::{Bounded, bounded};

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("unparsable Link header: {0}")]
    Syntax(String),
    #[error("Link target \"{0}\" is not under /api/v4/")]
    NotApi(String),
}

/// The `rel="next"` target of a `Link` header, as a path relative to `/api/v4/` with its query
/// (e.g. `projects/42/jobs?cursor=…&pagination=keyset`). `Ok(None)` when there is no next page.
pub fn next_relative(header: &str) -> Result<Option<String>, LinkError> {
    let rels = parse_link_header::parse_with_rel(header)
        .map_err(|e| LinkError::Syntax(crate::model::text::bounded(&format!("{e:?}"))))?;
    let Some(next) = rels.get("next") else {
        return Ok(None);
    };
    let raw = next.raw_uri.as_str();
    // Absolute (the usual case) or, defensively, a path-absolute reference.
    let parsed = url::Url::parse(raw)
        .or_else(|_| url::Url::parse("http://relative.invalid").and_then(|b| b.join(raw)))
        .map_err(|e| LinkError::Syntax(format!("\"{}\": {e}", Bounded(raw))))?;
    let path = parsed.path();
    let Some(idx) = path.find("/api/v4/") else {
        return Err(LinkError::NotApi(bounded(raw)));
    };
    let rel = &path[idx + "/api/v4/".len()..];
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|seg| seg == "..") {
        return Err(LinkError::NotApi(bounded(raw)));
    }
    Ok(Some(match parsed.query() {
        Some(q) => format!("{rel}?{q}"),
        None => rel.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_path_and_query_drops_host() {
        let h = r#"<https://gitlab.example.com/api/v4/projects/42/jobs?cursor=eyJpZCI6IjEyMyIsIl9rZCI6Im4ifQ%3D%3D&id=42&page=1&pagination=keyset&per_page=100>; rel="next""#;
        assert_eq!(
            next_relative(h).unwrap().as_deref(),
            Some(
                "projects/42/jobs?cursor=eyJpZCI6IjEyMyIsIl9rZCI6Im4ifQ%3D%3D&id=42&page=1&pagination=keyset&per_page=100"
            )
        );
    }

    #[test]
    fn relative_url_root_and_encoded_path_survive() {
        let h = r#"<http://public:8443/gitlab/api/v4/projects/a%2Fb/jobs?scope%5B%5D=pending&scope%5B%5D=running>; rel="next""#;
        assert_eq!(
            next_relative(h).unwrap().as_deref(),
            Some("projects/a%2Fb/jobs?scope%5B%5D=pending&scope%5B%5D=running")
        );
    }

    #[test]
    fn offset_style_links_pick_next_only() {
        let h = r#"<https://g.example/api/v4/projects/1/jobs?page=1>; rel="first", <https://g.example/api/v4/projects/1/jobs?page=3>; rel="next", <https://g.example/api/v4/projects/1/jobs?page=1>; rel="prev""#;
        assert_eq!(
            next_relative(h).unwrap().as_deref(),
            Some("projects/1/jobs?page=3")
        );
        let only_prev = r#"<https://g.example/api/v4/projects/1/jobs?page=1>; rel="prev""#;
        assert_eq!(next_relative(only_prev).unwrap(), None);
    }

    #[test]
    fn rejects_targets_outside_the_api() {
        assert!(matches!(
            next_relative(r#"<https://evil.example/steal?x=1>; rel="next""#),
            Err(LinkError::NotApi(_))
        ));
        assert!(next_relative("garbage").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".*") {
            let _ = next_relative(&s);
        }

        #[test]
        fn result_never_escapes_api(path in "[a-z0-9%./]{0,40}", q in "[a-z0-9=&%]{0,40}") {
            let h = format!("<https://h.example/api/v4/{path}?{q}>; rel=\"next\"");
            if let Ok(Some(rel)) = next_relative(&h) {
                prop_assert!(!rel.starts_with('/'));
                prop_assert!(!rel.split(['/', '?']).any(|s| s == ".."));
            }
        }
    }
}
