//! The opt-in connection Secret (`spec.writeConnectionSecretToRef`): `host`, `port`, `username`,
//! `password` (decoded) and `sshCommand`, in the resource's namespace, owned by the resource so it
//! goes when the resource goes. The only place the password is ever written.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use secrecy::ExposeSecret;

use super::FIELD_MANAGER;
use super::reasons::Reason;
use super::status::Problem;
use crate::metrics::Metrics;
use crate::resource::{CompShareInstance, connection_keys};
use compshare_api::Instance;
use compshare_api::parse_login_command;

const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// What the operator maintains for the resource after [`sync`].
#[derive(Debug, Default)]
pub(super) struct ConnectionSecret {
    /// The Secret the operator maintains now.
    pub name: Option<String>,
    /// Why the requested Secret cannot be maintained.
    pub problem: Option<Problem>,
}

/// Brings the connection Secret in line with the spec and the latest known instance. Writes only
/// when something differs; removes a Secret it owns that the spec no longer names, or that the
/// resource may no longer have (`refused`: the grant for the machine's password is missing).
pub(super) async fn sync(
    client: &kube::Client,
    metrics: &Metrics,
    resource: &CompShareInstance,
    instance: Option<&Instance>,
    refused: Option<Problem>,
) -> Result<ConnectionSecret, kube::Error> {
    let namespace = resource.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let wanted = resource
        .spec
        .write_connection_secret_to_ref
        .as_ref()
        .map(|r| r.name.as_str());
    let maintained = resource
        .status
        .as_ref()
        .and_then(|s| s.connection_secret_name.as_deref());

    if let Some(previous) = maintained.filter(|p| Some(*p) != wanted || refused.is_some()) {
        delete_if_owned(&api, previous, resource, metrics).await?;
    }
    let Some(name) = wanted else {
        return Ok(ConnectionSecret::default());
    };
    if let Some(problem) = refused {
        return Ok(ConnectionSecret {
            name: None,
            problem: Some(problem),
        });
    }
    // Nothing to write before the instance has been seen (or after a restart, before the first
    // observation): keep what exists.
    let Some(instance) = instance else {
        return Ok(ConnectionSecret {
            name: maintained.filter(|m| *m == name).map(str::to_owned),
            problem: None,
        });
    };

    let data = connection_data(instance);
    match api.get_opt(name).await? {
        Some(existing) if !is_owned_by(&existing, resource) => {
            return Ok(ConnectionSecret {
                name: None,
                problem: Some(Problem {
                    reason: Reason::ConnectionSecretConflict,
                    message: format!(
                        "Secret {namespace}/{name} exists and is not owned by this resource; choose another name in spec.writeConnectionSecretToRef or delete it"
                    ),
                }),
            });
        }
        Some(existing) if is_current(&existing, &data) => {}
        // Absent, deleted by hand, or edited by hand: written whole again.
        _ => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        MANAGED_BY_LABEL.to_owned(),
                        FIELD_MANAGER.to_owned(),
                    )])),
                    owner_references: Some(vec![owner_reference(resource)]),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".to_owned()),
                data: Some(data),
                ..Secret::default()
            };
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
            metrics.record_write("secret");
        }
    }
    Ok(ConnectionSecret {
        name: Some(name.to_owned()),
        problem: None,
    })
}

async fn delete_if_owned(
    api: &Api<Secret>,
    name: &str,
    resource: &CompShareInstance,
    metrics: &Metrics,
) -> Result<(), kube::Error> {
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    if !is_owned_by(&existing, resource) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            metrics.record_write("secret");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn connection_data(instance: &Instance) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::new();
    let mut put = |key: &str, value: &str| {
        data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
    };
    if let Some(login) = parse_login_command(&instance.ssh_login_command) {
        put(connection_keys::HOST, &login.host);
        put(connection_keys::PORT, &login.port.to_string());
        if let Some(user) = &login.user {
            put(connection_keys::USERNAME, user);
        }
    }
    if !instance.ssh_login_command.is_empty() {
        put(connection_keys::SSH_COMMAND, &instance.ssh_login_command);
    }
    match instance.password.as_ref().map(|p| p.decode()) {
        Some(Some(password)) => put(connection_keys::PASSWORD, password.expose_secret()),
        Some(None) => tracing::warn!(
            uhost_id = %instance.u_host_id,
            "the instance's password is not Base64 of UTF-8 text; the connection Secret has no password"
        ),
        None => {}
    }
    data
}

/// Whether an owned Secret already holds exactly `data` with the operator's label. (The apiserver
/// leaves out an empty `data`, so absent and empty are the same.)
fn is_current(existing: &Secret, data: &BTreeMap<String, ByteString>) -> bool {
    existing
        .data
        .as_ref()
        .map_or(data.is_empty(), |d| d == data)
        && existing.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(FIELD_MANAGER)
}

fn owner_reference(resource: &CompShareInstance) -> OwnerReference {
    OwnerReference {
        api_version: CompShareInstance::api_version(&()).into_owned(),
        kind: CompShareInstance::kind(&()).into_owned(),
        name: resource.name_any(),
        uid: resource.uid().unwrap_or_default(),
        controller: Some(true),
        // Blocking the owner's deletion needs update rights on its finalizers, which the
        // operator does not ask for; the garbage collector deletes the Secret either way.
        block_owner_deletion: None,
    }
}

fn is_owned_by(secret: &Secret, resource: &CompShareInstance) -> bool {
    let uid = resource.uid();
    secret
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref() && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use compshare_api::Password;

    fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
        data.get(key)
            .map(|v| String::from_utf8(v.0.clone()).unwrap())
    }

    #[test]
    fn holds_the_decoded_password_and_the_ssh_details() {
        let instance = Instance {
            ssh_login_command: "ssh root@117.50.1.2 -p 60022".into(),
            password: Some(Password::from("dWNsb3VkLmNu")),
            ..Instance::default()
        };
        let data = connection_data(&instance);
        assert_eq!(text(&data, "host").as_deref(), Some("117.50.1.2"));
        assert_eq!(text(&data, "port").as_deref(), Some("60022"));
        assert_eq!(text(&data, "username").as_deref(), Some("root"));
        assert_eq!(text(&data, "password").as_deref(), Some("ucloud.cn"));
        assert_eq!(
            text(&data, "sshCommand").as_deref(),
            Some("ssh root@117.50.1.2 -p 60022")
        );
    }

    #[test]
    fn an_owned_secret_is_current_only_with_the_same_data_and_label() {
        let labelled = |data: Option<BTreeMap<String, ByteString>>| Secret {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_owned(),
                    FIELD_MANAGER.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data,
            ..Secret::default()
        };
        let empty = BTreeMap::new();
        // The apiserver returns no `data` for an empty one: that is current, not a difference.
        assert!(is_current(&labelled(None), &empty));
        assert!(is_current(&labelled(Some(BTreeMap::new())), &empty));
        let data = connection_data(&Instance {
            ssh_login_command: "ssh root@1.2.3.4".into(),
            ..Instance::default()
        });
        assert!(is_current(&labelled(Some(data.clone())), &data));
        assert!(!is_current(&labelled(None), &data));
        let mut edited = data.clone();
        edited.insert("password".into(), ByteString(b"changed".to_vec()));
        assert!(!is_current(&labelled(Some(edited)), &data));
        let unlabelled = Secret {
            data: Some(data.clone()),
            ..Secret::default()
        };
        assert!(!is_current(&unlabelled, &data));
    }

    #[test]
    fn leaves_out_what_is_unknown() {
        let instance = Instance {
            password: Some(Password::from("%%% not base64")),
            ..Instance::default()
        };
        assert!(connection_data(&instance).is_empty());
    }
}
