//! Where Montage keeps its caches on a machine by default: the XDG base
//! directory specification's cache directory.

use std::ffi::OsString;
use std::path::PathBuf;

/// Montage's cache directory: `$XDG_CACHE_HOME/montage`, else
/// `$HOME/.cache/montage` (an empty variable counts as unset); `None`
/// without either. The coordinator keeps its render cache there and
/// `chunk-worker serve` its scratch and bundle cache in `worker/` under it.
pub fn montage_cache_dir() -> Option<PathBuf> {
    montage_cache_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// [`montage_cache_dir`] from the values of `XDG_CACHE_HOME` and `HOME`.
pub fn montage_cache_dir_from(
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(xdg_cache_home)
        .or_else(|| set(home).map(|h| h.join(".cache")))
        .map(|cache| cache.join("montage"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_cache_home_wins_then_home() {
        let v = |s: &str| Some(OsString::from(s));
        assert_eq!(
            montage_cache_dir_from(v("/x/cache"), v("/home/a")),
            Some(PathBuf::from("/x/cache/montage"))
        );
        assert_eq!(
            montage_cache_dir_from(v(""), v("/home/a")),
            Some(PathBuf::from("/home/a/.cache/montage"))
        );
        assert_eq!(
            montage_cache_dir_from(None, v("/home/a")),
            Some(PathBuf::from("/home/a/.cache/montage"))
        );
        assert_eq!(montage_cache_dir_from(None, v("")), None);
        assert_eq!(montage_cache_dir_from(None, None), None);
    }
}
