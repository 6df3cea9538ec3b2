//! `--ssh ID=KEYFILE[,KEYFILE]`: an ssh agent kiln serves itself from key files for the
//! length of a build, so a `RUN --mount=type=ssh` can authenticate without the user
//! running `ssh-agent`. Keys never leave this process: steps get the socket, and the
//! agent signs for them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ssh_agent_lib::agent::{Session, listen};
use ssh_agent_lib::error::AgentError;
use ssh_agent_lib::proto::{Identity, SignRequest};
use ssh_key::{PrivateKey, Signature};

/// A key file that cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("--ssh key {path}: {reason}")]
pub struct KeyError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub reason: String,
}

/// The keys one agent offers.
#[derive(Clone)]
struct Keys(Arc<Vec<(PrivateKey, String)>>);

#[async_trait::async_trait]
impl Session for Keys {
    async fn request_identities(&mut self) -> Result<Vec<Identity>, AgentError> {
        Ok(self
            .0
            .iter()
            .map(|(key, comment)| Identity {
                credential: key.public_key().key_data().clone().into(),
                comment: comment.clone(),
            })
            .collect())
    }

    async fn sign(&mut self, request: SignRequest) -> Result<Signature, AgentError> {
        let wanted = request.credential.key_data();
        let (key, _) = self
            .0
            .iter()
            .find(|(key, _)| key.public_key().key_data() == wanted)
            .ok_or_else(|| AgentError::from(std::io::Error::other("no such key in this agent")))?;
        // ssh-key signs RSA with SHA-512 (rsa-sha2-512), ed25519 and ECDSA as they are.
        signature::Signer::try_sign(key, &request.data).map_err(AgentError::other)
    }
}

/// Reads OpenSSH private key files; an encrypted key is refused with what to do instead.
pub fn load_keys(paths: &[PathBuf]) -> Result<Vec<(PrivateKey, String)>, KeyError> {
    let mut keys = Vec::new();
    for path in paths {
        let fail = |reason: String| KeyError {
            path: path.clone(),
            reason,
        };
        let bytes = crate::input_file::read_regular_file(
            path,
            "the key file",
            crate::input_file::MAX_SSH_KEY_SIZE,
        )
        .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            fail("the key file is not text; give an OpenSSH private key".to_owned())
        })?;
        let key = PrivateKey::from_openssh(&text).map_err(|e| {
            fail(format!(
                "{e}; give an OpenSSH private key (ssh-keygen writes them)"
            ))
        })?;
        if key.is_encrypted() {
            return Err(fail(
                "the key is encrypted; add it to an agent (ssh-add) and pass --ssh ID=$SSH_AUTH_SOCK"
                    .to_owned(),
            ));
        }
        let comment = path.display().to_string();
        keys.push((key, comment));
    }
    Ok(keys)
}

/// Serves `keys` on a new socket at `socket` until the returned task is aborted.
pub fn serve(
    keys: Vec<(PrivateKey, String)>,
    socket: &Path,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    // Only root (and the sandbox, which binds it in) may talk to the agent.
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let keys = Keys(Arc::new(keys));
    Ok(tokio::spawn(async move {
        // The agent lives as long as the build; its errors end only itself.
        let _ = listen(listener, keys).await;
    }))
}
