//! BuildKit's "did you mean" (`suggest.Search`): the first candidate within edit distance
//! two, a closer one replacing it; none when the word is itself a candidate.

/// The closest of `candidates` to `word` (case-sensitive), if any is within distance 2.
pub(crate) fn search<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<&str> = None;
    let mut min = 3;
    for candidate in candidates {
        if candidate == word {
            return None;
        }
        let distance = levenshtein(word, candidate);
        if distance < min {
            best = Some(candidate);
            min = distance;
        }
    }
    best
}

/// Insertions, deletions and substitutions, each costing one, over characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(word: &str, candidates: &[&str], expected: Option<&str>) {
        assert_eq!(search(word, candidates.iter().copied()), expected, "{word}");
    }

    #[test]
    fn suggestions() {
        check(
            "BULIDPLATFORM",
            &["BUILDOS", "BUILDPLATFORM"],
            Some("BUILDPLATFORM"),
        );
        check(
            "MYARCH",
            &["MY_ARCH", "MY_OS", "TARGETARCH"],
            Some("MY_ARCH"),
        );
        check(
            "DIR_ASSET",
            &["DIR_ASSETS", "DIR_BINARIES", "PATH"],
            Some("DIR_ASSETS"),
        );
        check("PAHT", &["PATH"], Some("PATH"));
        check("PATH", &["PAT", "PATH"], None);
        check("version", &["tag", "TARGETOS"], None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
