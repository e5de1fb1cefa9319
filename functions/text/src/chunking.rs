//! Token-aware chunking: pieces of text cut at paragraph and sentence boundaries,
//! packed greedily into chunks of at most `max_tokens` model tokens, with the
//! trailing sentences of one chunk repeated at the start of the next (overlap).

/// A chunk of a document's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// What gets embedded: `text[start..end]`, trimmed of surrounding whitespace.
    pub text: String,
    /// Byte offset of the chunk in the document text, so a hit can point into it.
    pub start: usize,
    /// End byte offset (exclusive).
    pub end: usize,
    /// Model tokens the chunk holds (at most `max_tokens`): those starting in its
    /// range, or in the whitespace trimmed off just before it.
    pub tokens: usize,
}

/// A contiguous byte range and the tokens starting in it.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    tokens: usize,
    /// Part of a sentence too long for one chunk: windows already overlap.
    window: bool,
}

/// Cuts `text` into chunks of at most `max_tokens` tokens that overlap by up to
/// `overlap` tokens (at most half a chunk). Segments end at blank lines, newlines and
/// sentence ends; consecutive segments pack greedily; a segment longer than a chunk is
/// cut at token boundaries into windows that share `overlap` tokens.
///
/// `tokens` are the (start, end) byte offsets of the text's tokens as the model's
/// tokenizer sees them, without special tokens. Offsets out of range or inside a
/// character are ignored; words no token covers (offsets that stop short, or none at
/// all) count as one token each. Deterministic; never panics.
pub fn chunk(text: &str, tokens: &[(u32, u32)], max_tokens: usize, overlap: usize) -> Vec<Chunk> {
    let max = max_tokens.max(1);
    let overlap = overlap.min(max / 2);
    let mut starts: Vec<usize> = tokens
        .iter()
        .filter_map(|t| usize::try_from(t.0).ok())
        .filter(|&s| s < text.len() && text.is_char_boundary(s))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    fill_untokenized_words(text, &mut starts);
    let count = |a: usize, b: usize| {
        starts.partition_point(|&s| s < b) - starts.partition_point(|&s| s < a)
    };
    let mut pieces = Vec::new();
    for (a, b) in segments(text) {
        let n = count(a, b);
        if n <= max {
            pieces.push(Piece {
                start: a,
                end: b,
                tokens: n,
                window: false,
            });
            continue;
        }
        // A sentence longer than a chunk: windows of `max` tokens, `overlap` shared.
        let first = starts.partition_point(|&s| s < a);
        let stride = (max - overlap).max(1);
        let mut t = 0;
        loop {
            let at = |k: usize| starts.get(first + k).copied().unwrap_or(b);
            let from = if t == 0 { a } else { at(t) };
            let last = t + max >= n;
            let to = if last { b } else { at(t + max) };
            pieces.push(Piece {
                start: from,
                end: to,
                tokens: count(from, to),
                window: true,
            });
            if last {
                break;
            }
            t += stride;
        }
    }
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < pieces.len() {
        let (mut j, mut n) = (i, 0);
        while j < pieces.len() && (j == i || n + pieces[j].tokens <= max) {
            n += pieces[j].tokens;
            j += 1;
        }
        let (a, b) = (pieces[i].start, pieces[j - 1].end);
        let raw = &text[a..b];
        let trimmed = raw.trim();
        if !trimmed.is_empty() {
            let lead = raw.len() - raw.trim_start().len();
            chunks.push(Chunk {
                text: trimmed.to_owned(),
                start: a + lead,
                end: a + lead + trimmed.len(),
                tokens: n,
            });
        }
        if j >= pieces.len() {
            break;
        }
        // Start the next chunk with the trailing whole sentences that fit in `overlap`
        // and still leave room for the next piece.
        let (mut k, mut shared) = (j, 0);
        while k > i + 1
            && !pieces[k - 1].window
            && shared + pieces[k - 1].tokens <= overlap
            && shared + pieces[k - 1].tokens + pieces[j].tokens <= max
        {
            shared += pieces[k - 1].tokens;
            k -= 1;
        }
        i = k;
    }
    chunks
}

/// Byte ranges covering `text`, ending after each newline and after sentence ends
/// (`.`, `!`, `?` followed by whitespace).
fn segments(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_end = false;
    for (i, c) in text.char_indices() {
        if prev_end && c.is_whitespace() && i > start {
            out.push((start, i));
            start = i;
        }
        prev_end = matches!(c, '.' | '!' | '?' | '\n' | '。');
        if c == '\n' {
            let next = i + 1;
            if next > start {
                out.push((start, next));
                start = next;
            }
            prev_end = false;
        }
    }
    if start < text.len() {
        out.push((start, text.len()));
    }
    out
}

/// Counts a word that no token starts in (nor in the whitespace before it) as one
/// token: offsets that stop short of the text (a tokenizer that truncates) or none at
/// all must not leave text that weighs nothing and so packs without limit.
fn fill_untokenized_words(text: &str, starts: &mut Vec<usize>) {
    let mut extra = Vec::new();
    let mut gap_start = 0;
    for word in word_starts(text) {
        let end = text[word..]
            .find(char::is_whitespace)
            .map_or(text.len(), |n| word + n);
        let first = starts.partition_point(|&s| s < gap_start);
        if starts.get(first).is_none_or(|&s| s >= end) {
            extra.push(word);
        }
        gap_start = end;
    }
    if !extra.is_empty() {
        starts.extend(extra);
        starts.sort_unstable();
    }
}

/// Where each whitespace-separated word begins.
fn word_starts(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            out.push(i);
            in_word = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words as tokens, the way the model's offsets look.
    fn words(text: &str) -> Vec<(u32, u32)> {
        word_starts(text)
            .into_iter()
            .map(|s| {
                let e = text[s..]
                    .find(char::is_whitespace)
                    .map_or(text.len(), |n| s + n);
                (s as u32, e as u32)
            })
            .collect()
    }

    fn covered(text: &str, chunks: &[Chunk]) {
        for s in word_starts(text) {
            assert!(
                chunks.iter().any(|c| c.start <= s && s < c.end),
                "token at {s} in no chunk"
            );
        }
    }

    #[test]
    fn packs_sentences_within_the_budget_with_overlap() {
        let text: String = (0..40)
            .map(|i| format!("Sentence number {i} is here. "))
            .collect();
        let chunks = chunk(&text, &words(&text), 20, 5);
        assert!(chunks.len() > 5);
        for c in &chunks {
            assert!(c.tokens <= 20, "{c:?}");
            assert!(c.text.ends_with('.'), "cut mid-sentence: {c:?}");
            assert_eq!(&text[c.start..c.end], c.text);
        }
        for pair in chunks.windows(2) {
            assert!(
                pair[1].start < pair[0].end,
                "no overlap between {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
        covered(&text, &chunks);
    }

    #[test]
    fn splits_a_sentence_longer_than_a_chunk() {
        let text = "word ".repeat(100);
        let chunks = chunk(&text, &words(&text), 30, 4);
        assert!(chunks.len() >= 4);
        assert!(chunks.iter().all(|c| c.tokens <= 30));
        covered(&text, &chunks);
    }

    #[test]
    fn paragraphs_and_non_ascii() {
        let text =
            "Première phrase ici.\n\nDeuxième paragraphe — très court.\n\n日本語の文。次の文。";
        let chunks = chunk(text, &words(text), 4, 1);
        covered(text, &chunks);
        assert!(chunks.iter().all(|c| c.tokens <= 4 && !c.text.is_empty()));
    }

    #[test]
    fn bad_offsets_and_no_tokens_never_panic() {
        let text = "héllo wörld. again";
        let bad = [(1, 2), (2, 3), (999, 1000), (0, 1)];
        let chunks = chunk(text, &bad, 2, 1);
        assert!(!chunks.is_empty());
        let chunks = chunk(text, &[], 1, 0);
        assert_eq!(chunks.len(), 3);
        assert!(chunk("", &[], 10, 2).is_empty());
        assert!(chunk("   \n\n ", &[], 10, 2).is_empty());
    }

    /// Subword tokens: pieces of at most three characters, the way a WordPiece or
    /// BPE tokenizer cuts long words (offsets in bytes, on char boundaries).
    fn subwords(text: &str) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for s in word_starts(text) {
            let word = text[s..].split(char::is_whitespace).next().unwrap_or("");
            let chars: Vec<(usize, char)> = word.char_indices().collect();
            for piece in chars.chunks(3) {
                let a = s + piece[0].0;
                let last = piece[piece.len() - 1];
                let b = s + last.0 + last.1.len_utf8();
                out.push((a as u32, b as u32));
            }
        }
        out
    }

    fn check(text: &str, tokens: &[(u32, u32)], max: usize, overlap: usize) -> Vec<Chunk> {
        let chunks = chunk(text, tokens, max, overlap);
        for c in &chunks {
            assert!(c.tokens <= max, "{c:?}");
            assert!(!c.text.is_empty() && c.text == c.text.trim(), "{c:?}");
            assert_eq!(&text[c.start..c.end], c.text);
        }
        for &(s, _) in tokens {
            let s = s as usize;
            if s < text.len()
                && text.is_char_boundary(s)
                && !text[s..].starts_with(char::is_whitespace)
            {
                assert!(
                    chunks.iter().any(|c| c.start <= s && s < c.end),
                    "token at {s} in no chunk"
                );
            }
        }
        chunks
    }

    #[test]
    fn subword_tokens_non_ascii_and_overlap() {
        let text = "Les glaciers façonnent les vallées. Über die Gletscher lässt sich viel sagen! \
                    氷河は谷を削る。Ледники отступают быстро? Ice cores record climate.\n\n\
                    Second paragraph about moraines and erratic boulders carried far away.";
        let tokens = subwords(text);
        let chunks = check(text, &tokens, 12, 4);
        assert!(chunks.len() >= 4, "{chunks:#?}");
        let overlapping = chunks.windows(2).filter(|p| p[1].start < p[0].end).count();
        assert!(overlapping > 0, "{chunks:#?}");
        assert_eq!(chunk(text, &tokens, 12, 4), chunks);
    }

    #[test]
    fn truncated_token_offsets_still_bound_chunks() {
        let text = "word ".repeat(200);
        let all = words(&text);
        let chunks = check(&text, &all[..20], 10, 2);
        assert!(chunks.len() >= 20, "{}", chunks.len());
        covered(&text, &chunks);
    }

    #[test]
    fn long_segment_windows_overlap_by_whole_tokens() {
        let text = format!("Intro. {} End.", "abc".repeat(40));
        let tokens = subwords(&text);
        let chunks = check(&text, &tokens, 8, 3);
        let windows: Vec<&Chunk> = chunks
            .iter()
            .filter(|c| c.text.starts_with("abc"))
            .collect();
        assert!(windows.len() >= 3, "{chunks:#?}");
        for pair in windows.windows(2) {
            assert_eq!(pair[0].end - pair[1].start, 9, "{pair:?}");
        }
    }

    #[test]
    fn deterministic() {
        let text = "A b c. D e f! G h i? J k l.\nM n o.";
        assert_eq!(
            chunk(text, &words(text), 5, 2),
            chunk(text, &words(text), 5, 2)
        );
    }
}
