//! Which API key pair a resource may use: its own Secret (same namespace, always), or the
//! operator's default Secret where the administrator allowed it. Never another namespace's Secret.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use tokio::time::Instant;

use super::reasons::Reason;
use super::status::Problem;
use crate::resource::{CompShareInstance, PRIVATE_KEY_KEY, PUBLIC_KEY_KEY, SecretRef};
use compshare_api::Credentials;

/// A Secret named `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SecretName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for SecretName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(SecretName {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

/// The namespaces whose resources may use the default credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AllowedNamespaces {
    All,
    Only(BTreeSet<String>),
}

impl AllowedNamespaces {
    pub(crate) fn allows(&self, namespace: &str) -> bool {
        match self {
            AllowedNamespaces::All => true,
            AllowedNamespaces::Only(names) => names.contains(namespace),
        }
    }
}

impl FromStr for AllowedNamespaces {
    type Err = String;

    /// `*` for all namespaces, or a comma-separated list (possibly empty: none).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "*" {
            return Ok(AllowedNamespaces::All);
        }
        Ok(AllowedNamespaces::Only(
            s.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CredentialsPolicy {
    pub default_secret: Option<SecretName>,
    pub default_namespaces: AllowedNamespaces,
    /// How long a Secret read is reused: one read serves every resource that names the Secret,
    /// and a rotated key is picked up within this time (plus the re-check interval).
    pub cache_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// A person must fix something; shown in the resource's conditions.
    #[error("{}", .0.message)]
    Problem(Problem),
    /// The apiserver could not be asked; retried.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Reads credentials for resources, with a short cache.
pub(crate) struct CredentialsResolver {
    client: kube::Client,
    policy: CredentialsPolicy,
    cache: Mutex<HashMap<SecretName, CachedRead>>,
}

/// A Secret read and when it happened; problems are cached too, so a missing Secret named by many
/// resources is not read once per resource.
type CachedRead = (Instant, Result<Credentials, Problem>);

impl CredentialsResolver {
    pub(crate) fn new(client: kube::Client, policy: CredentialsPolicy) -> Self {
        CredentialsResolver {
            client,
            policy,
            cache: Mutex::default(),
        }
    }

    /// The resource's credentials; `fresh` reads the Secret even when a recent read is cached
    /// (for a resource stalled on its credentials, whose Secret may have just been fixed).
    pub(crate) async fn resolve(
        &self,
        resource: &CompShareInstance,
        fresh: bool,
    ) -> Result<Credentials, ResolveError> {
        self.resolve_ref(
            resource.namespace().unwrap_or_default(),
            resource.spec.credentials_ref.as_ref(),
            fresh,
        )
        .await
    }

    /// The credentials a resource in `namespace` with `spec.credentialsRef` = `reference` uses
    /// (the same rules for every kind of resource).
    pub(crate) async fn resolve_ref(
        &self,
        namespace: String,
        reference: Option<&SecretRef>,
        fresh: bool,
    ) -> Result<Credentials, ResolveError> {
        let problem = |reason, message| Err(ResolveError::Problem(Problem { reason, message }));
        let secret = match reference {
            Some(reference) => SecretName {
                namespace,
                name: reference.name.clone(),
            },
            None => match &self.policy.default_secret {
                None => {
                    return problem(
                        Reason::CredentialsMissing,
                        "spec.credentialsRef is not set and the operator has no default credentials; set spec.credentialsRef to a Secret in this namespace".into(),
                    );
                }
                Some(_) if !self.policy.default_namespaces.allows(&namespace) => {
                    return problem(
                        Reason::DefaultCredentialsNotAllowed,
                        format!(
                            "spec.credentialsRef is not set, and namespace {namespace} may not use the operator's default credentials; set spec.credentialsRef to a Secret in this namespace"
                        ),
                    );
                }
                Some(default) => default.clone(),
            },
        };
        self.read(&secret, fresh).await
    }

    async fn read(&self, secret: &SecretName, fresh: bool) -> Result<Credentials, ResolveError> {
        if !fresh
            && let Some((at, result)) = self.cache.lock().expect("cache lock").get(secret)
            && at.elapsed() < self.policy.cache_ttl
        {
            return result.clone().map_err(ResolveError::Problem);
        }
        let result = self.fetch(secret).await?;
        self.cache
            .lock()
            .expect("cache lock")
            .insert(secret.clone(), (Instant::now(), result.clone()));
        result.map_err(ResolveError::Problem)
    }

    async fn fetch(
        &self,
        secret: &SecretName,
    ) -> Result<Result<Credentials, Problem>, kube::Error> {
        read_secret(&self.client, secret).await
    }

    /// Yields whenever a Secret in use changed (a rotated key, a deleted Secret), checking every
    /// Secret that ever resolved to credentials about every `period`. Secrets are not watched:
    /// that would need rights to read every Secret in the cluster.
    pub(crate) fn rotations(self: Arc<Self>, period: Duration) -> impl Stream<Item = ()> + Send {
        futures::stream::unfold(self, move |resolver| async move {
            loop {
                tokio::time::sleep(super::jittered(period)).await;
                if resolver.changed_since_read().await {
                    return Some(((), resolver));
                }
            }
        })
    }

    /// Reads every Secret that held credentials again; whether any of them changed.
    async fn changed_since_read(&self) -> bool {
        let in_use: Vec<(SecretName, Credentials)> = self
            .cache
            .lock()
            .expect("cache lock")
            .iter()
            .filter_map(|(name, (_, result))| Some((name.clone(), result.clone().ok()?)))
            .collect();
        let mut changed = false;
        for (name, before) in in_use {
            let Ok(now) = self.fetch(&name).await else {
                // The apiserver is unreachable: try again next period.
                continue;
            };
            if !now.as_ref().is_ok_and(|c| c.same_keys(&before)) {
                tracing::info!(secret = %name, "credentials Secret changed");
                changed = true;
            }
            self.cache
                .lock()
                .expect("cache lock")
                .insert(name, (Instant::now(), now));
        }
        changed
    }
}

/// Reads the key pair in `secret`: `Ok(Err(…))` when a person must fix something (the Secret is
/// missing, unreadable for the operator, or holds no usable keys), `Err` when the apiserver could
/// not be asked.
pub(crate) async fn read_secret(
    client: &kube::Client,
    secret: &SecretName,
) -> Result<Result<Credentials, Problem>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    Ok(match api.get_opt(&secret.name).await {
        Ok(Some(found)) => credentials_from(&found, secret),
        Ok(None) => Err(Problem {
            reason: Reason::CredentialsMissing,
            message: format!("Secret {secret} does not exist"),
        }),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(Problem {
            reason: Reason::CredentialsForbidden,
            message: format!("reading Secret {secret} is forbidden: {}", status.message),
        }),
        Err(other) => return Err(other),
    })
}

/// The key pair in a Secret, checked so that a person learns what is wrong without the values
/// ever being shown.
fn credentials_from(secret: &Secret, name: &SecretName) -> Result<Credentials, Problem> {
    let key = |key: &str| -> Result<String, Problem> {
        let invalid = |what: String| Problem {
            reason: Reason::CredentialsInvalid,
            message: format!("Secret {name}: {what}"),
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| {
                invalid(format!(
                    "has no key {key:?} (expected {PUBLIC_KEY_KEY:?} and {PRIVATE_KEY_KEY:?})"
                ))
            })?;
        key_text(key, &bytes.0).map_err(invalid)
    };
    Ok(Credentials::new(
        key(PUBLIC_KEY_KEY)?,
        key(PRIVATE_KEY_KEY)?,
    ))
}

/// One key of a pair, trimmed, or what is wrong with it (naming the key, never showing the value):
/// the same rules wherever keys come from (a Secret, a key file, the environment).
pub(crate) fn key_text(key: &str, bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("key {key:?} is not UTF-8 text"))?
        .trim();
    if text.is_empty() {
        return Err(format!("key {key:?} is empty"));
    }
    if !text.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "key {key:?} contains characters other than printable ASCII"
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use secrecy::ExposeSecret;

    fn secret(entries: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn name() -> SecretName {
        "team/keys".parse().unwrap()
    }

    #[test]
    fn reads_and_trims_the_key_pair() {
        let c = credentials_from(
            &secret(&[("publicKey", b"pub-1\n"), ("privateKey", b"  priv-1 ")]),
            &name(),
        )
        .unwrap();
        assert_eq!(c.public_key, "pub-1");
        assert_eq!(c.private_key.expose_secret(), "priv-1");
    }

    #[test]
    fn bad_secrets_say_what_is_wrong_without_the_values() {
        type Entries<'a> = &'a [(&'a str, &'a [u8])];
        let cases: [(Entries, &str); 5] = [
            (&[("publicKey", b"pub")], "has no key \"privateKey\""),
            (
                &[("publicKey", b""), ("privateKey", b"p")],
                "key \"publicKey\" is empty",
            ),
            (
                &[("publicKey", b"pub"), ("privateKey", b" \n")],
                "key \"privateKey\" is empty",
            ),
            (
                &[("publicKey", "p\u{e9}b".as_bytes()), ("privateKey", b"p")],
                "printable ASCII",
            ),
            (
                &[("publicKey", b"pub"), ("privateKey", b"\xff\xfe")],
                "not UTF-8",
            ),
        ];
        for (entries, expected) in cases {
            let problem = credentials_from(&secret(entries), &name()).unwrap_err();
            assert_eq!(problem.reason, Reason::CredentialsInvalid);
            assert!(problem.message.contains(expected), "{}", problem.message);
            assert!(problem.message.starts_with("Secret team/keys: "));
            assert!(!problem.message.contains("pub\""));
        }
        let empty = credentials_from(&Secret::default(), &name()).unwrap_err();
        assert!(empty.message.contains("has no key \"publicKey\""));
    }

    #[test]
    fn allowed_namespaces_parse() {
        assert_eq!("*".parse::<AllowedNamespaces>(), Ok(AllowedNamespaces::All));
        let some: AllowedNamespaces = "a, b,,".parse().unwrap();
        assert!(some.allows("a") && some.allows("b") && !some.allows("c"));
        let none: AllowedNamespaces = "".parse().unwrap();
        assert!(!none.allows("default"));
        assert!("nope".parse::<SecretName>().is_err());
        assert_eq!(name().to_string(), "team/keys");
    }
}
