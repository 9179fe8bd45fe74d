//! czctl's config file: the intercept settings a team shares — its registry's copy of the proxy
//! image, the pull secret, the tunnel, the timeout, the header — set once instead of on every
//! command. The file is TOML whose keys are the long flags' names (`proxy-image = "..."`); it
//! holds no secrets (an image pull secret is the name of a Secret in the cluster).
//!
//! Where: `--config FILE` (or `CZ_CONFIG`), else `$XDG_CONFIG_HOME/czctl/config.toml` (on every
//! platform, when set), else the platform's config directory: `~/.config` on Linux,
//! `~/Library/Application Support` on macOS, `%APPDATA%` on Windows. A missing file at the
//! default location is no config; a missing `--config` file is an error.
//!
//! Precedence: a flag wins over its `CZ_*` variable, which wins over the file, which wins over the
//! built-in default. Clap resolves the first two and the default; [`layer`] puts the file's value
//! in where clap's value is only its default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, ValueEnum};
use czctl::{InterceptRule, TunnelMode};

/// The keys the file may set: the long flags they stand for.
pub const KEYS: [&str; 5] = [
    "proxy-image",
    "image-pull-secret",
    "tunnel",
    "timeout",
    "header",
];

/// The file's settings, each checked as its flag's value is.
#[derive(Debug, Default, PartialEq)]
pub struct ConfigFile {
    /// `proxy-image`.
    pub proxy_image: Option<String>,
    /// `image-pull-secret`.
    pub image_pull_secret: Option<String>,
    /// `tunnel`.
    pub tunnel: Option<TunnelMode>,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `header`.
    pub header: Option<InterceptRule>,
}

/// The file as written: strings, checked into a [`ConfigFile`] key by key.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Written {
    proxy_image: Option<String>,
    image_pull_secret: Option<String>,
    tunnel: Option<String>,
    timeout: Option<String>,
    header: Option<String>,
}

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read the config file {}: {source}; fix the path given by --config or CZ_CONFIG, or unset it to use the default location", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or a value is not a string.
    #[error("the config file {} is not valid: {source}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: toml::de::Error,
    },
    /// A key czctl does not know (a typo, or a setting that is not shared).
    #[error("unknown key `{key}` in the config file {}{}; the keys are the long flags' names: {}", path.display(), suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(), KEYS.join(", "))]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The closest known key, when one is close.
        suggestion: Option<&'static str>,
    },
    /// A value its flag would refuse.
    #[error("invalid `{key}` in the config file {}: {reason}; fix or remove it", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The config file at the default location: `$XDG_CONFIG_HOME/czctl/config.toml` when that
/// variable holds an absolute path, else `czctl/config.toml` in the platform's config directory.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(dirs::config_dir)
        .map(|dir| dir.join("czctl").join("config.toml"))
}

/// Reads `explicit` (`--config`/`CZ_CONFIG`), else the file at [`default_path`] if there is one.
pub fn load(explicit: Option<&Path>) -> Result<ConfigFile, ConfigError> {
    let path = match (explicit, default_path()) {
        (Some(path), _) => path.to_owned(),
        (None, Some(path)) if path.is_file() => path,
        (None, _) => return Ok(ConfigFile::default()),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&text, &path)
}

/// The settings in `text`, the contents of the file at `path`.
pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
    let syntax = |source| ConfigError::Syntax {
        path: path.to_owned(),
        source,
    };
    let table: toml::Table = toml::from_str(text).map_err(syntax)?;
    if let Some(key) = table.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(ConfigError::UnknownKey {
            path: path.to_owned(),
            key: key.clone(),
            suggestion: closest_key(key),
        });
    }
    let written: Written = table.try_into().map_err(syntax)?;
    let invalid = |key: &'static str| {
        move |reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        }
    };
    Ok(ConfigFile {
        proxy_image: written.proxy_image,
        image_pull_secret: written.image_pull_secret,
        tunnel: written
            .tunnel
            .map(|value| {
                TunnelMode::from_str(&value, false).map_err(|_| one_of::<TunnelMode>(&value))
            })
            .transpose()
            .map_err(invalid("tunnel"))?,
        timeout: written
            .timeout
            .map(|value| humantime::parse_duration(&value).map_err(|e| e.to_string()))
            .transpose()
            .map_err(invalid("timeout"))?,
        header: written
            .header
            .map(|value| value.parse::<InterceptRule>().map_err(|e| e.to_string()))
            .transpose()
            .map_err(invalid("header"))?,
    })
}

/// Why `value` is not one of `T`'s values.
fn one_of<T: ValueEnum>(value: &str) -> String {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|variant| variant.to_possible_value())
        .map(|possible| possible.get_name().to_owned())
        .collect();
    format!("`{value}` is not one of {}", names.join(", "))
}

/// The known key closest to `key`, if it is close enough to be a typo of it.
fn closest_key(key: &str) -> Option<&'static str> {
    let normalized = key.replace('_', "-").to_lowercase();
    KEYS.iter()
        .map(|known| (strsim::levenshtein(&normalized, known), *known))
        .filter(|(distance, known)| *distance <= known.len() / 3 + 1)
        .min()
        .map(|(_, known)| known)
}

/// Replaces `current` (clap's value of argument `id`) with the file's value, unless a flag or
/// a `CZ_*` variable set it: the file wins over defaults only.
pub fn layer<T>(matches: &ArgMatches, id: &str, current: &mut T, from_file: Option<T>) {
    let explicit = matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    if let (false, Some(value)) = (explicit, from_file) {
        *current = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn path() -> PathBuf {
        PathBuf::from("/home/dev/.config/czctl/config.toml")
    }

    #[test]
    fn every_key_is_read_and_checked_as_its_flag() {
        let file = parse(
            r#"
                proxy-image = "registry.internal/cz-proxy:1.2"
                image-pull-secret = "regcred"
                tunnel = "port-forward"
                timeout = "5m"
                header = "X-Team:payments"
            "#,
            &path(),
        )
        .expect("a valid file");
        assert_eq!(
            file,
            ConfigFile {
                proxy_image: Some("registry.internal/cz-proxy:1.2".into()),
                image_pull_secret: Some("regcred".into()),
                tunnel: Some(TunnelMode::PortForward),
                timeout: Some(Duration::from_secs(300)),
                header: Some("X-Team:payments".parse().expect("a rule")),
            }
        );
        assert_eq!(parse("", &path()).expect("empty"), ConfigFile::default());
    }

    #[test]
    fn an_unknown_key_is_named_with_the_file_and_the_closest_key() {
        let error = parse("proxy_image = \"x\"\n", &path()).expect_err("unknown");
        let message = error.to_string();
        assert!(
            message.contains("unknown key `proxy_image`")
                && message.contains("/home/dev/.config/czctl/config.toml")
                && message.contains("did you mean `proxy-image`?")
                && message.contains("image-pull-secret"),
            "{message}"
        );
        let error = parse("namespace = \"team\"\n", &path()).expect_err("unknown");
        assert!(
            !error.to_string().contains("did you mean"),
            "nothing close: {error}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_file() {
        for (text, key) in [
            (
                "tunnel = \"udp\"",
                "`udp` is not one of auto, port-forward, direct",
            ),
            ("timeout = \"soon\"", "`timeout`"),
            ("header = \"no-colon\"", "`header`"),
        ] {
            let message = parse(text, &path()).expect_err(text).to_string();
            assert!(
                message.contains(key) && message.contains("config.toml"),
                "{message}"
            );
        }
        let message = parse("timeout = 120", &path())
            .expect_err("a number")
            .to_string();
        assert!(message.contains("timeout"), "{message}");
        let message = parse("proxy-image = ", &path())
            .expect_err("no value")
            .to_string();
        assert!(message.contains("not valid"), "{message}");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let message = load(Some(Path::new("/nonexistent/czctl.toml")))
            .expect_err("missing")
            .to_string();
        assert!(
            message.contains("/nonexistent/czctl.toml") && message.contains("--config"),
            "{message}"
        );
    }

    /// Flag > file > default on an argument like the intercept's settings; a variable is a
    /// flag's peer here (clap resolves both), which `tests/intercept/dry_run.rs` runs czctl with.
    #[test]
    fn flag_wins_over_file_which_wins_over_default() {
        let command = Command::new("czctl").arg(
            Arg::new("proxy_image")
                .long("proxy-image")
                .default_value("default"),
        );
        let resolve = |args: &[&str], from_file: Option<&str>| {
            let matches = command.clone().try_get_matches_from(args).expect("parses");
            let mut value = matches
                .get_one::<String>("proxy_image")
                .expect("a value")
                .clone();
            layer(
                &matches,
                "proxy_image",
                &mut value,
                from_file.map(str::to_owned),
            );
            value
        };
        assert_eq!(resolve(&["czctl"], None), "default");
        assert_eq!(resolve(&["czctl"], Some("file")), "file");
        assert_eq!(
            resolve(&["czctl", "--proxy-image", "flag"], Some("file")),
            "flag"
        );
    }
}
