//! The corpus on disk: read it, or download it once from its public URL, verify its checksum and
//! cache it, the way the tutorial's `wget` does.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the tutorial gets Tiny Shakespeare.
pub const TINY_SHAKESPEARE_URL: &str =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
/// sha256 of the 1,115,394-byte Tiny Shakespeare file.
pub const TINY_SHAKESPEARE_SHA256: &str =
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";

/// Refuse downloads larger than this: a corpus for a character model is megabytes, not gigabytes.
const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read the corpus {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the corpus {path} is not valid UTF-8 text (first bad byte at offset {offset})")]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("the corpus {path} is empty")]
    Empty { path: PathBuf },
    #[error(
        "the corpus {path} has {distinct} distinct character(s); a language model needs at least 2"
    )]
    TooFewChars { path: PathBuf, distinct: usize },
    #[error(
        "the corpus {path} is missing and could not be downloaded from {url}: {reason}\n\
         Download it by hand (e.g. `curl -L -o {path} {url}`) and run again."
    )]
    Download {
        url: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "checksum mismatch for {what}: expected sha256 {expected}, got {actual}.\n\
         The file is corrupt or not the expected corpus: delete it and download it again."
    )]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cannot write the corpus cache {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the corpus {path} does not exist and no download URL is configured")]
    Missing { path: PathBuf },
    #[error(
        "the {split} split has {tokens} tokens, too few for block_size {block_size}: \
         it needs at least block_size + 1; lower block_size or use a larger corpus"
    )]
    SplitTooSmall {
        split: &'static str,
        tokens: usize,
        block_size: usize,
    },
    #[error("train_fraction must be strictly between 0 and 1, got {0}")]
    BadFraction(f64),
}

/// Where a corpus lives and, optionally, where to fetch it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusSource {
    /// Local path, also the cache location for downloads.
    pub path: PathBuf,
    /// Downloaded from here when `path` is missing.
    pub url: Option<String>,
    /// Expected sha256 (hex) of the file; checked after download and on every load.
    pub sha256: Option<String>,
}

impl CorpusSource {
    /// Tiny Shakespeare, cached at `path`.
    pub fn tiny_shakespeare(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            url: Some(TINY_SHAKESPEARE_URL.to_string()),
            sha256: Some(TINY_SHAKESPEARE_SHA256.to_string()),
        }
    }
}

/// Reads the corpus as text, downloading and caching it first when it is missing.
pub fn load_corpus(source: &CorpusSource) -> Result<String, DataError> {
    let path = &source.path;
    if !path.exists() {
        match &source.url {
            Some(url) => download(url, path, source.sha256.as_deref())?,
            None => return Err(DataError::Missing { path: path.clone() }),
        }
    }
    let bytes = fs::read(path).map_err(|source| DataError::Read {
        path: path.clone(),
        source,
    })?;
    if let Some(expected) = &source.sha256 {
        verify_sha256(&bytes, expected, &path.display().to_string())?;
    }
    let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.clone(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    if text.is_empty() {
        return Err(DataError::Empty { path: path.clone() });
    }
    let mut distinct: Vec<char> = text.chars().take(1 << 20).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        return Err(DataError::TooFewChars {
            path: path.clone(),
            distinct: distinct.len(),
        });
    }
    Ok(text)
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn verify_sha256(bytes: &[u8], expected: &str, what: &str) -> Result<(), DataError> {
    let actual = sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(DataError::Checksum {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Fetches `url`, verifies it and moves it into place atomically, so an interrupted download
/// never leaves a half-written corpus behind.
fn download(url: &str, path: &Path, sha256: Option<&str>) -> Result<(), DataError> {
    let fail = |reason: String| DataError::Download {
        url: url.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    eprintln!("downloading {url} -> {}", path.display());
    let mut response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD_BYTES)
        .read_to_vec()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(expected) = sha256 {
        verify_sha256(&bytes, expected, &format!("the download from {url}"))?;
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(|source| DataError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let write_err = |source| DataError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile_in(dir.unwrap_or(Path::new("."))).map_err(write_err)?;
    tmp.1.write_all(&bytes).map_err(write_err)?;
    tmp.1.sync_all().map_err(write_err)?;
    fs::rename(&tmp.0, path).map_err(write_err)
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let name = format!(".download-{}.part", std::process::id());
    let path = dir.join(name);
    let file = fs::File::create(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;
    use std::thread;

    /// Serves `body` to `requests` HTTP GETs on a loopback port; returns the URL.
    fn serve(body: Vec<u8>, requests: usize) -> (String, thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/input.txt", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(header.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
                served += 1;
            }
            served
        });
        (url, handle)
    }

    fn corpus_text() -> String {
        "To be, or not to be: that is the question.\n".repeat(50)
    }

    #[test]
    fn downloads_verifies_and_caches() {
        let text = corpus_text();
        let (url, server) = serve(text.clone().into_bytes(), 1);
        let dir = tempfile::tempdir().unwrap();
        let source = CorpusSource {
            path: dir.path().join("data/corpus/input.txt"),
            url: Some(url),
            sha256: Some(sha256_hex(text.as_bytes())),
        };
        assert_eq!(load_corpus(&source).unwrap(), text);
        assert_eq!(server.join().unwrap(), 1);
        // Cached: the server is gone, the second load reads the file.
        assert_eq!(load_corpus(&source).unwrap(), text);
        let leftovers: Vec<_> = fs::read_dir(source.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("input.txt")]);
    }

    #[test]
    fn checksum_mismatch_on_download_is_an_error_and_caches_nothing() {
        let (url, server) = serve(b"not the corpus you want\n".to_vec(), 1);
        let dir = tempfile::tempdir().unwrap();
        let source = CorpusSource {
            path: dir.path().join("input.txt"),
            url: Some(url),
            sha256: Some(TINY_SHAKESPEARE_SHA256.into()),
        };
        let err = load_corpus(&source).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(TINY_SHAKESPEARE_SHA256));
        server.join().unwrap();
        assert!(!source.path.exists());
    }

    #[test]
    fn offline_error_names_url_and_path() {
        // A port that was just free: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}/input.txt");
        let source = CorpusSource {
            path: dir.path().join("input.txt"),
            url: Some(url.clone()),
            sha256: None,
        };
        let msg = load_corpus(&source).unwrap_err().to_string();
        assert!(msg.contains(&url), "{msg}");
        assert!(msg.contains(&source.path.display().to_string()), "{msg}");
    }

    #[test]
    fn bad_local_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            CorpusSource {
                path,
                url: None,
                sha256: None,
            }
        };
        assert!(matches!(
            load_corpus(&at("empty.txt", b"")),
            Err(DataError::Empty { .. })
        ));
        assert!(matches!(
            load_corpus(&at("bin.txt", b"ab\xff\xfe")),
            Err(DataError::NotUtf8 { offset: 2, .. })
        ));
        assert!(matches!(
            load_corpus(&at("one.txt", b"aaaa")),
            Err(DataError::TooFewChars { distinct: 1, .. })
        ));
        let missing = CorpusSource {
            path: dir.path().join("nope.txt"),
            url: None,
            sha256: None,
        };
        assert!(matches!(
            load_corpus(&missing),
            Err(DataError::Missing { .. })
        ));
        let mut wrong = at("ok.txt", b"abc");
        wrong.sha256 = Some(TINY_SHAKESPEARE_SHA256.into());
        assert!(matches!(
            load_corpus(&wrong),
            Err(DataError::Checksum { .. })
        ));
    }

    #[test]
    fn shared_tiny_shakespeare_matches_its_checksum() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/tinyshakespeare/input.txt");
        let Ok(mut file) = fs::File::open(&path) else {
            eprintln!("skipped: {} is not present", path.display());
            return;
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 1_115_394);
        assert_eq!(sha256_hex(&bytes), TINY_SHAKESPEARE_SHA256);
    }
}
