//! Kubeconfig files for the control plane: one for the admin, one per ServiceAccount asked for.

use std::fs::File;
use std::io;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};

use crate::{Error, IoContext};

const NAME: &str = "compshare-testbed";

/// Writes a kubeconfig that reaches `server` (verified against `ca_pem`) as `user` with `token`,
/// and returns it.
pub(crate) fn write(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    token: String,
) -> Result<Kubeconfig, Error> {
    let kubeconfig = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: NAME.into(),
            cluster: Some(Cluster {
                server: Some(server.into()),
                // Embedded rather than a path, so the file stands on its own wherever it is used.
                certificate_authority_data: Some(BASE64.encode(ca_pem)),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.into(),
            auth_info: Some(AuthInfo {
                token: Some(token.into()),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: NAME.into(),
            context: Some(Context {
                cluster: NAME.into(),
                user: Some(user.into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(NAME.into()),
        ..Kubeconfig::default()
    };
    // JSON is YAML, and kubectl and every client library read it.
    File::create(path)
        .and_then(|file| serde_json::to_writer_pretty(file, &kubeconfig).map_err(io::Error::from))
        .context(|| format!("write {}", path.display()))?;
    Ok(kubeconfig)
}

pub(crate) async fn config(kubeconfig: Kubeconfig) -> Result<kube::Config, Error> {
    Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// A client that acts as whoever the kubeconfig at `path` names, for example a ServiceAccount from
/// [`ControlPlane::service_account_kubeconfig`](crate::ControlPlane::service_account_kubeconfig).
/// Like every [`kube::Client`], it belongs to the runtime it was created in.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let config = config(Kubeconfig::read_from(path)?).await?;
    Ok(kube::Client::try_from(config)?)
}
