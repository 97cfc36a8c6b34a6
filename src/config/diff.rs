//! What a reload must do: which lines to stop and which to start, from the old and the
//! new configuration.

use super::model::Config;
use super::names::LineName;

/// What a reload must do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Lines to stop (removed, changed, or below a changed line), children first.
    pub stop: Vec<LineName>,
    /// Lines to start (added, changed, or below a changed line), parents first.
    pub start: Vec<LineName>,
}

/// Compares two configurations. A line whose settings differ is restarted, and so is
/// everything stacked on it; an unchanged line is not touched.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let mut stop: Vec<LineName> = Vec::new();
    for l in &old.lines {
        if new.line(l.name.as_str()) != Some(l) && !stop.contains(&l.name) {
            stop.push(l.name.clone());
            for d in old.descendants(l.name.as_str()) {
                if !stop.contains(&d) {
                    stop.push(d);
                }
            }
        }
    }
    let mut start: Vec<LineName> = new
        .ordered()
        .into_iter()
        .filter(|l| old.line(l.name.as_str()) != Some(*l) || stop.contains(&l.name))
        .map(|l| l.name.clone())
        .collect();
    start.dedup();
    stop.sort_by_key(|n| std::cmp::Reverse(old.depth(n.as_str())));
    Diff { stop, start }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::config::names::Mtu;
    use crate::config::testdata::{cfg, SERVER_TOML};

    #[test]
    fn diff_restarts_changed_line_and_its_children_only() {
        let old = cfg(SERVER_TOML).unwrap();
        let mut new = old.clone();
        assert_eq!(diff(&old, &new), Diff::default());
        new.lines[0].mtu = Some(Mtu::new(1400, false).unwrap());
        let d = diff(&old, &new);
        assert_eq!(
            d.stop.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["tunnel_secure", "tunnel_base"]
        );
        assert_eq!(
            d.start.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["tunnel_base", "tunnel_secure"]
        );
        // Changing only the child leaves the parent alone.
        let mut new2 = old.clone();
        new2.lines[1].mtu = Some(Mtu::new(1300, false).unwrap());
        let d = diff(&old, &new2);
        assert_eq!(d.stop, vec![new2.lines[1].name.clone()]);
        assert_eq!(d.start, vec![new2.lines[1].name.clone()]);
    }
}
