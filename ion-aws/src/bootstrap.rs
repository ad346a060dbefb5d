//! The instance bootstrap script (EC2 user data): a fixed template whose every value is quoted.
//!
//! Values reach the script only through [`shell_quote`], which wraps them in single quotes (the
//! one shell quoting with no special characters inside) and writes each embedded `'` as `'\''`.
//! Tenant values are validated types as well, so they could not carry a quote even before
//! quoting; the quoting is what keeps operator-supplied command words safe too.

use ion_core::LaunchRequest;

/// Quotes `s` as one shell word: the shell reads back exactly `s`, whatever it contains.
///
/// Shell words cannot hold a NUL byte; config validation refuses those before rendering.
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        if ch == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(ch);
        }
    }
    out.push('\'');
    out
}

/// Renders the bootstrap script for `request`: it exports the launch's identity and artifact
/// reference as `ION_*` variables and `exec`s `command` (the node agent that fetches, verifies
/// and runs the artifact).
pub fn render_bootstrap(request: &LaunchRequest, command: &[String]) -> String {
    let vars: [(&str, String); 8] = [
        ("ION_TENANT", request.tenant.to_string()),
        ("ION_APP", request.app.to_string()),
        ("ION_VERSION", request.version.0.to_string()),
        ("ION_ARTIFACT_ID", request.artifact.id.to_string()),
        ("ION_ARTIFACT_SHA256", request.artifact.sha256.to_string()),
        ("ION_ARTIFACT_LENGTH", request.artifact.length.to_string()),
        ("ION_PORT", request.port.to_string()),
        ("ION_IDEMPOTENCY_KEY", request.idempotency_key.to_string()),
    ];
    let mut script = String::from(
        "#!/bin/sh\n# ion bootstrap, rendered by ion-aws: every value below is single-quoted.\nset -eu\n",
    );
    for (name, value) in &vars {
        script.push_str(name);
        script.push('=');
        script.push_str(&shell_quote(value));
        script.push('\n');
    }
    script.push_str("export");
    for (name, _) in &vars {
        script.push(' ');
        script.push_str(name);
    }
    script.push_str("\nexec");
    for word in command {
        script.push(' ');
        script.push_str(&shell_quote(word));
    }
    script.push('\n');
    script
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::process::Command;

    use ion_core::{
        AppId, ArtifactId, ArtifactRef, IdempotencyKey, Sha256Digest, TenantId, Version, Zone,
    };
    use proptest::prelude::*;

    use super::*;

    fn request(tenant: &str, app: &str, key: &str, artifact: &str, port: u16) -> LaunchRequest {
        LaunchRequest {
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            zone: Zone::parse("us-east-1a").unwrap(),
            tenant: TenantId::parse(tenant).unwrap(),
            app: AppId::parse(app).unwrap(),
            version: Version(7),
            artifact: ArtifactRef {
                id: ArtifactId::parse(artifact).unwrap(),
                sha256: Sha256Digest::of(artifact.as_bytes()),
                length: 1234,
            },
            port,
        }
    }

    fn sh(script: &str, extra: &[&str]) -> std::process::Output {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .args(extra)
            .output()
            .expect("run /bin/sh")
    }

    #[test]
    fn script_exports_the_launch_and_execs_the_command() {
        let r = request("acme", "web", "k-1", "art-9", 8080);
        let script = render_bootstrap(&r, &["/opt/ion/bin/ion-agent".into(), "run".into()]);
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("ION_TENANT='acme'\n"), "{script}");
        assert!(script.contains("ION_PORT='8080'\n"), "{script}");
        assert!(
            script.ends_with("exec '/opt/ion/bin/ion-agent' 'run'\n"),
            "{script}"
        );
        let check = Command::new("/bin/sh")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(check.success(), "sh -n rejected:\n{script}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever a word contains (quotes, `$(…)`, backticks, newlines, `;`), the shell reads
        /// back exactly that word: nothing escapes its quotes.
        #[test]
        fn quoted_words_read_back_verbatim(word in "[^\u{0}]{0,40}") {
            let out = sh(&format!("printf '%s' {}", shell_quote(&word)), &[]);
            prop_assert!(out.status.success());
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }

        /// The rendered script is valid shell, sets exactly the launch's values, and passes a
        /// hostile command word through as one argument.
        #[test]
        fn rendered_scripts_never_let_a_value_escape(
            tenant in "[a-z][a-z0-9-]{0,30}[a-z0-9]",
            app in "[a-z][a-z0-9-]{0,38}[a-z0-9]",
            key in "[a-z0-9][a-z0-9-]{0,62}",
            artifact in "[a-z0-9][a-z0-9-]{0,62}",
            port in 1u16..,
            hostile in "[^\u{0}]{0,30}",
        ) {
            prop_assume!(!key.ends_with('-') && !artifact.ends_with('-'));
            let r = request(&tenant, &app, &key, &artifact, port);

            let dump = render_bootstrap(&r, &["/usr/bin/env".into(), "-0".into()]);
            let check = Command::new("/bin/sh").args(["-n", "-c", &dump]).status().unwrap();
            prop_assert!(check.success(), "sh -n rejected:\n{}", dump);
            let out = sh(&dump, &[]);
            prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let expected: BTreeMap<String, String> = [
                ("ION_TENANT", tenant.clone()),
                ("ION_APP", app.clone()),
                ("ION_VERSION", "7".to_owned()),
                ("ION_ARTIFACT_ID", artifact.clone()),
                ("ION_ARTIFACT_SHA256", Sha256Digest::of(artifact.as_bytes()).to_string()),
                ("ION_ARTIFACT_LENGTH", "1234".to_owned()),
                ("ION_PORT", port.to_string()),
                ("ION_IDEMPOTENCY_KEY", key.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let env: BTreeMap<String, String> = out
                .stdout
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv).into_owned();
                    let (k, v) = kv.split_once('=')?;
                    expected.contains_key(k).then(|| (k.to_owned(), v.to_owned()))
                })
                .collect();
            prop_assert_eq!(env, expected);

            let echo = render_bootstrap(&r, &["/usr/bin/printf".into(), "%s".into(), hostile.clone()]);
            let out = sh(&echo, &[]);
            prop_assert!(out.status.success());
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), hostile);
        }
    }
}
