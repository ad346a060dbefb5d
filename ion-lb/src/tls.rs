//! Checks a route's certificate and key in Rust before anything reaches disk or nginx.
//!
//! A chain is accepted only when it is one or more `CERTIFICATE` blocks and nothing else (no text
//! around the blocks, no headers), the leaf is valid now, every DNS name in its SANs is one of the
//! route's own hostnames (so a tenant cannot present a certificate for another tenant's host), and
//! the key is an unencrypted PKCS#8 `PRIVATE KEY` whose public half is the leaf's. The files ion
//! writes are re-encoded from the parsed blocks, so no stray text of the tenant's survives.

use std::time::SystemTime;

use ion_core::{Hostname, Sha256Digest, TlsCertificate};
use x509_parser::prelude::*;

/// Largest accepted chain, in bytes.
pub const MAX_CHAIN_BYTES: usize = 64 * 1024;
/// Most certificates in a chain.
pub const MAX_CHAIN_CERTS: usize = 8;
/// Largest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 16 * 1024;

/// A certificate and key that passed every check, re-encoded by ion.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckedTls {
    /// The chain, leaf first, canonical PEM.
    pub chain_pem: String,
    /// The key, canonical PKCS#8 PEM.
    pub key_pem: String,
    /// A digest of both, naming the files.
    pub digest: Sha256Digest,
}

impl std::fmt::Debug for CheckedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedTls")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Checks `tls` for a route serving `hostnames` at time `now`; the error says which rule failed.
pub fn check(
    tls: &TlsCertificate,
    hostnames: &[Hostname],
    now: SystemTime,
) -> Result<CheckedTls, String> {
    if tls.chain_pem.len() > MAX_CHAIN_BYTES {
        return Err(format!("certificate chain is over {MAX_CHAIN_BYTES} bytes"));
    }
    if tls.key_pem.len() > MAX_KEY_BYTES {
        return Err(format!("private key is over {MAX_KEY_BYTES} bytes"));
    }
    let chain_blocks = pem_blocks(&tls.chain_pem)?;
    if chain_blocks.is_empty() {
        return Err("certificate chain has no certificate".into());
    }
    if chain_blocks.len() > MAX_CHAIN_CERTS {
        return Err(format!(
            "certificate chain has more than {MAX_CHAIN_CERTS} certificates"
        ));
    }
    let mut ders = Vec::new();
    for block in &chain_blocks {
        if block.label != "CERTIFICATE" {
            return Err(format!("certificate chain holds a {:?} block", block.label));
        }
        let (_, pem) = x509_parser::pem::parse_x509_pem(block.text.as_bytes())
            .map_err(|_| "certificate block is not valid pem".to_string())?;
        ders.push(pem.contents);
    }
    let (rest, leaf) =
        parse_x509_certificate(&ders[0]).map_err(|_| "leaf certificate does not parse")?;
    if !rest.is_empty() {
        return Err("leaf certificate has trailing bytes".into());
    }
    for der in &ders[1..] {
        parse_x509_certificate(der).map_err(|_| "chain certificate does not parse")?;
    }

    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| "clock before 1970")?
        .as_secs();
    let at = ASN1Time::from_timestamp(secs as i64).map_err(|_| "bad time")?;
    if !leaf.validity().is_valid_at(at) {
        return Err("leaf certificate is not valid now (expired or not yet valid)".into());
    }

    let san = leaf
        .subject_alternative_name()
        .map_err(|_| "subject alternative names do not parse")?
        .ok_or("leaf certificate has no subject alternative names")?;
    let mut dns = 0;
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(n) => {
                dns += 1;
                if !hostnames.iter().any(|h| h.as_str() == *n) {
                    return Err(format!(
                        "certificate names {n:?}, which is not one of the route's hostnames"
                    ));
                }
            }
            _ => return Err("certificate has a non-dns subject alternative name".into()),
        }
    }
    if dns == 0 {
        return Err("leaf certificate has no dns subject alternative name".into());
    }

    let key_blocks = pem_blocks(&tls.key_pem)?;
    if key_blocks.len() != 1 || key_blocks[0].label != "PRIVATE KEY" {
        return Err("key must be exactly one unencrypted pkcs#8 PRIVATE KEY block".into());
    }
    let key = rcgen::KeyPair::from_pem(&key_blocks[0].text)
        .map_err(|_| "private key does not parse (unsupported or encrypted)")?;
    if key.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
        return Err("private key does not match the leaf certificate".into());
    }

    let chain_pem: String = chain_blocks.iter().map(|b| b.text.as_str()).collect();
    let key_pem = key.serialize_pem();
    let mut both = chain_pem.clone().into_bytes();
    both.extend_from_slice(key_pem.as_bytes());
    Ok(CheckedTls {
        digest: Sha256Digest::of(&both),
        chain_pem,
        key_pem,
    })
}

struct PemBlock {
    label: String,
    text: String,
}

/// Splits PEM text into blocks, refusing anything but whitespace between them and anything but
/// base64 inside them (no `Proc-Type` headers, so no encrypted legacy keys).
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        match &mut current {
            None => {
                if line.trim().is_empty() {
                    continue;
                }
                let label = line
                    .strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                    .ok_or("text outside a pem block")?;
                if !label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
                    return Err("bad pem label".into());
                }
                current = Some((label.to_string(), format!("{line}\n")));
            }
            Some((label, body)) => {
                if let Some(end) = line
                    .strip_prefix("-----END ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    if end != label {
                        return Err("pem END label does not match BEGIN".into());
                    }
                    body.push_str(line);
                    body.push('\n');
                    let (label, text) = current.take().expect("inside a block");
                    out.push(PemBlock { label, text });
                } else if !line.is_empty()
                    && line
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
                {
                    body.push_str(line);
                    body.push('\n');
                } else {
                    return Err("pem block holds something other than base64".into());
                }
            }
        }
    }
    if current.is_some() {
        return Err("unterminated pem block".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn host(s: &str) -> Hostname {
        Hostname::parse(s).unwrap()
    }

    fn cert_for(names: &[&str]) -> TlsCertificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        TlsCertificate {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    #[test]
    fn accepts_a_matching_current_certificate() {
        let tls = cert_for(&["a.example.com"]);
        let ok = check(&tls, &[host("a.example.com")], SystemTime::now()).unwrap();
        assert!(ok.chain_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(ok.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn refuses_a_san_outside_the_route() {
        let tls = cert_for(&["a.example.com", "victim.example.com"]);
        let err = check(&tls, &[host("a.example.com")], SystemTime::now()).unwrap_err();
        assert!(err.contains("victim.example.com"), "{err}");
        let wild = cert_for(&["*.example.com"]);
        assert!(check(&wild, &[host("a.example.com")], SystemTime::now()).is_err());
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let a = cert_for(&["a.example.com"]);
        let b = cert_for(&["a.example.com"]);
        let mixed = TlsCertificate {
            chain_pem: a.chain_pem,
            key_pem: b.key_pem,
        };
        let err = check(&mixed, &[host("a.example.com")], SystemTime::now()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn refuses_expired_and_not_yet_valid_certificates() {
        let tls = cert_for(&["a.example.com"]);
        let far = SystemTime::now() + Duration::from_secs(200 * 365 * 86400);
        assert!(check(&tls, &[host("a.example.com")], far).is_err());
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(86400);
        assert!(check(&tls, &[host("a.example.com")], past).is_err());
    }

    #[test]
    fn refuses_engine_keys_trailing_text_and_encrypted_keys() {
        let tls = cert_for(&["a.example.com"]);
        let hosts = [host("a.example.com")];
        for key in [
            "engine:evil:x".to_string(),
            "store:file:/etc/shadow".to_string(),
            "data:-----BEGIN PRIVATE KEY-----".to_string(),
            format!("{}include /etc/shadow;\n", tls.key_pem),
            tls.key_pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
            tls.key_pem.replacen('\n', "\nProc-Type: 4,ENCRYPTED\n", 1),
        ] {
            let bad = TlsCertificate {
                chain_pem: tls.chain_pem.clone(),
                key_pem: key.clone(),
            };
            assert!(check(&bad, &hosts, SystemTime::now()).is_err(), "{key:?}");
        }
        let trailing = TlsCertificate {
            chain_pem: format!("{}\n}}\nserver {{\n", tls.chain_pem),
            key_pem: tls.key_pem.clone(),
        };
        assert!(check(&trailing, &hosts, SystemTime::now()).is_err());
        let huge = TlsCertificate {
            chain_pem: tls.chain_pem.repeat(5 * 1024 * 1024 / tls.chain_pem.len()),
            key_pem: tls.key_pem,
        };
        assert!(check(&huge, &hosts, SystemTime::now()).is_err());
    }
}
