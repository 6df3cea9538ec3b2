//! `kiln login` and `kiln logout`, and the registry settings every registry command uses.
//!
//! Settings come from kiln's config file (`$KILN_CONFIG`, else
//! `$XDG_CONFIG_HOME/kiln/config.json` or `~/.config/kiln/config.json`, else
//! `/etc/kiln/config.json`), with the keys docker's `daemon.json` uses:
//! `{"registry-mirrors": ["https://mirror.example"], "insecure-registries": ["r.lan:5000"],
//! "ca-files": ["/etc/ssl/my-ca.pem"]}`, plus `--insecure-registry` on the command line.
//! kiln's own key `"registry-stall-timeout": SECONDS` (default 30) bounds how long one
//! registry request may go without progress before it is retried; each retry is shown
//! on stderr.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use kiln_exporter::registry::{AuthConfig, Registry, RegistryConfig, default_docker_config_path};
use serde::Deserialize;

use crate::args::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// The registry, e.g. `registry.example:5000` [default: Docker Hub]
    pub(crate) server: Option<String>,
    /// User name
    #[arg(short = 'u', long)]
    pub(crate) username: Option<String>,
    /// Password (prefer --password-stdin: a password on the command line is visible to
    /// other users of this machine)
    #[arg(short = 'p', long)]
    pub(crate) password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub(crate) password_stdin: bool,
    /// Allow plain HTTP or an untrusted certificate for this registry
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LogoutArgs {
    /// The registry [default: Docker Hub]
    pub(crate) server: Option<String>,
}

/// kiln's config file, as far as registries are concerned.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileConfig {
    #[serde(default)]
    registry_mirrors: Vec<String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    #[serde(default)]
    ca_files: Vec<PathBuf>,
    /// Seconds.
    registry_stall_timeout: Option<f64>,
}

fn config_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|dir| dir.join("kiln/config.json"));
    user.filter(|p| p.exists())
        .or_else(|| Some(PathBuf::from("/etc/kiln/config.json")).filter(|p| p.exists()))
}

/// The registry settings for this invocation.
pub(crate) fn registry_config(extra_insecure: &[String]) -> anyhow::Result<RegistryConfig> {
    let path = config_file();
    let file = match &path {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read kiln's config file {}", path.display()))?;
            serde_json::from_str::<FileConfig>(&text).with_context(|| {
                format!(
                    "{}: not valid kiln config JSON; expected keys registry-mirrors, insecure-registries, ca-files, registry-stall-timeout (seconds)",
                    path.display()
                )
            })?
        }
        _ => FileConfig::default(),
    };
    let mut insecure = file.insecure_registries;
    insecure.extend(extra_insecure.iter().cloned());
    let defaults = RegistryConfig::default();
    let stall_timeout = match file.registry_stall_timeout {
        None => defaults.stall_timeout,
        Some(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => {
            std::time::Duration::from_secs_f64(seconds)
        }
        Some(seconds) => bail!(
            "{}: registry-stall-timeout {seconds} is not a number of seconds above 0; write e.g. 30",
            path.as_deref()
                .unwrap_or(std::path::Path::new("kiln's config file"))
                .display()
        ),
    };
    Ok(RegistryConfig {
        stall_timeout,
        on_retry: kiln_exporter::registry::RetryObserver::new(|retrying| {
            eprintln!("{retrying}");
        }),
        auth: AuthConfig {
            docker_config: default_docker_config_path(),
            helper_dirs: Vec::new(),
        },
        ca_files: file.ca_files,
        insecure_registries: insecure,
        mirrors: file.registry_mirrors,
        ..RegistryConfig::default()
    })
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

pub(crate) fn login(_global: &GlobalArgs, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let server = args.server.unwrap_or_else(|| "docker.io".to_owned());
    let Some(username) = args.username else {
        bail!("give a user name with -u USER (kiln does not prompt)");
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("give the password either with -p or with --password-stdin"),
        (Some(p), false) => p,
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read the password from stdin")?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => bail!("give the password with --password-stdin (or -p)"),
    };
    let config = registry_config(&args.insecure)?;
    let path = runtime()?.block_on(async {
        Registry::new(config)?
            .login(&server, &username, &password)
            .await
    })?;
    eprintln!("Login Succeeded (credentials saved in {})", path.display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn logout(_global: &GlobalArgs, args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let server = args.server.unwrap_or_else(|| "docker.io".to_owned());
    let config = registry_config(&[])?;
    let removed = runtime()?.block_on(async { Registry::new(config)?.logout(&server).await })?;
    if removed {
        eprintln!("Removing login credentials for {server}");
    } else {
        eprintln!("Not logged in to {server}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The image to push, named for its registry (e.g. registry.example:5000/app:1;
    /// use `kiln tag` to give it such a name)
    pub(crate) image: String,
    /// Layer compression for the registry: gzip, zstd or uncompressed
    #[arg(long, default_value = "gzip")]
    pub(crate) compression: String,
    /// Allow plain HTTP or an untrusted certificate for this registry
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PullArgs {
    /// The image, e.g. busybox or registry.example:5000/app:1
    pub(crate) image: String,
    /// The platform to pull from a multi-platform image [default: this machine's]
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// Allow plain HTTP or an untrusted certificate for this registry
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure: Vec<String>,
}

fn access(insecure: &[String]) -> kiln_engine::RegistryAccess {
    kiln_engine::RegistryAccess {
        insecure: insecure.to_vec(),
        ..kiln_engine::RegistryAccess::default()
    }
}

pub(crate) fn push(global: &GlobalArgs, args: PushArgs) -> anyhow::Result<ExitCode> {
    use kiln_exporter::registry::{BlobOutcome, ImageRef};
    let compression = kiln_engine::parse_compression(&args.compression)
        .map_err(|e| anyhow::anyhow!("{}", e.render().trim_start_matches("error: ").trim_end()))?;
    let target = ImageRef::parse(&args.image).with_context(|| {
        format!(
            "{} is not a registry name; tag it first (kiln tag {} HOST/REPO:TAG)",
            args.image, args.image
        )
    })?;
    let engine = crate::cmd::store::open_engine(global)?;
    let report = runtime()?.block_on(crate::interrupt::or_signal(
        async {
            Ok(engine
                .push(&args.image, compression, &access(&args.insecure))
                .await?)
        },
        "push",
    ))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "The push refers to repository [{}/{}]",
        target.registry(),
        target.repository()
    )?;
    for blob in &report.blobs {
        let what = match &blob.outcome {
            BlobOutcome::Uploaded => "Pushed".to_owned(),
            BlobOutcome::Skipped => "Layer already exists".to_owned(),
            BlobOutcome::Mounted { from } => format!("Mounted from {from}"),
            other => format!("{other:?}"),
        };
        writeln!(out, "{}: {what}", blob.digest)?;
    }
    writeln!(
        out,
        "{}: digest: {} ({} uploaded)",
        target.tag().unwrap_or("latest"),
        report.manifest_digest,
        report.uploaded
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn pull(global: &GlobalArgs, args: PullArgs) -> anyhow::Result<ExitCode> {
    use kiln_exporter::registry::{ImageRef, Platform};
    let reference = ImageRef::parse(&args.image)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let engine = crate::cmd::store::open_engine(global)?;
    let image = runtime()?.block_on(crate::interrupt::or_signal(
        async {
            Ok(engine
                .pull(&args.image, &platform, &access(&args.insecure))
                .await?)
        },
        "pull",
    ))?;
    writeln!(
        std::io::stdout(),
        "Digest: {}\n{}",
        image.manifest_descriptor.digest,
        reference
    )?;
    Ok(ExitCode::SUCCESS)
}
