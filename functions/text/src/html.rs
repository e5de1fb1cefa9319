//! HTML: the visible text. Scripts, styles, templates and the head are dropped (the
//! `<title>` gives the title), entities decoded, block elements become line or
//! paragraph breaks, runs of whitespace collapse. `html5gum` tokenizes; no DOM is
//! built.

use html5gum::{DefaultEmitter, Token, Tokenizer};

use crate::extract::{Extracted, clip_title, tidy};

/// Elements whose content is not visible text.
const HIDDEN: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object", "canvas",
    "select", "datalist",
];
/// Elements that may sit in `<head>`; any other start tag ends an unclosed head.
const HEAD_CONTENT: &[&str] = &[
    "title", "meta", "link", "style", "script", "noscript", "base", "template",
];
/// Elements that end a line.
const LINES: &[&str] = &["br", "li", "tr", "dt", "dd", "option", "caption"];
/// Elements that end a paragraph.
const PARAGRAPHS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "nav",
    "aside",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "dl",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "hr",
    "form",
    "fieldset",
    "legend",
    "address",
    "details",
    "summary",
    "body",
    "html",
];
/// Elements inside a word's flow: no separator at their edges.
const INLINE: &[&str] = &[
    "a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "del", "dfn", "em", "font", "i", "ins",
    "kbd", "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var",
    "wbr",
];

/// What is being collected apart from the text.
#[derive(PartialEq)]
enum Capture {
    None,
    Title,
    Heading,
}

/// The visible text of an HTML document; title from `<title>`, else the first `<h1>`.
pub(crate) fn html(source: &str) -> Extracted {
    run(source).0
}

/// [`html`], and the steps it took: tags and text tokens seen, elements pushed on and
/// popped off the hidden stack, and text bytes scanned. Every step is O(1), so the
/// count bounds the work; it is linear in the input (the tests hold it to that).
fn run(source: &str) -> (Extracted, usize) {
    let mut emitter = DefaultEmitter::default();
    // Script and style content is raw text, not markup.
    emitter.naively_switch_states(true);
    let mut text = Text::default();
    let mut hidden = Hidden::default();
    let (mut title, mut h1) = (String::new(), String::new());
    let (mut title_done, mut h1_done) = (false, false);
    let mut capture = Capture::None;
    let mut steps = 0;
    for token in Tokenizer::new_with_emitter(source, emitter).flatten() {
        steps += 1;
        match token {
            Token::StartTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                let name = name.as_str();
                if !HEAD_CONTENT.contains(&name)
                    && let Some(at) = hidden.first(HEAD)
                {
                    hidden.truncate(at);
                }
                if name == "title" && !title_done && hidden.only(HEAD) {
                    capture = Capture::Title;
                } else if name == "h1" && !h1_done && hidden.is_empty() {
                    capture = Capture::Heading;
                }
                if let Some(h) = hidden_index(name)
                    && !tag.self_closing
                {
                    hidden.push(h);
                }
                text.separate(separator(name));
            }
            Token::EndTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                let name = name.as_str();
                match (name, &capture) {
                    ("title", Capture::Title) => {
                        title_done = true;
                        capture = Capture::None;
                    }
                    ("h1", Capture::Heading) => {
                        h1_done = true;
                        capture = Capture::None;
                    }
                    _ => {}
                }
                if let Some(at) = hidden_index(name).and_then(|h| hidden.last(h)) {
                    hidden.truncate(at);
                }
                text.separate(separator(name));
            }
            Token::String(s) => {
                let s = String::from_utf8_lossy(&s);
                match capture {
                    Capture::Title => title.push_str(&s),
                    Capture::Heading => h1.push_str(&s),
                    Capture::None => {}
                }
                if hidden.is_empty() {
                    text.push_str(&s);
                }
            }
            _ => {}
        }
    }
    steps += hidden.steps + text.steps;
    let x = Extracted {
        text: tidy(&text.text),
        title: clip_title(&title).or_else(|| clip_title(&h1)),
        pages: None,
    };
    (x, steps)
}

/// `head`'s index in [`HIDDEN`].
const HEAD: usize = 4;

fn hidden_index(name: &str) -> Option<usize> {
    HIDDEN.iter().position(|h| *h == name)
}

/// The open hidden elements, innermost last, as indices into [`HIDDEN`]; with where
/// each name sits, so that finding one never scans the stack (a page of unclosed
/// `<svg>` tags would make that quadratic).
#[derive(Default)]
struct Hidden {
    stack: Vec<usize>,
    /// For each hidden name, its places in `stack`, lowest first.
    at: [Vec<usize>; HIDDEN.len()],
    /// Elements pushed and popped, for [`run`]'s count.
    steps: usize,
}

impl Hidden {
    fn is_empty(&self) -> bool {
        self.stack.is_empty()
    }

    fn push(&mut self, h: usize) {
        self.steps += 1;
        self.at[h].push(self.stack.len());
        self.stack.push(h);
    }

    /// Closes the elements from `len` up.
    fn truncate(&mut self, len: usize) {
        while self.stack.len() > len
            && let Some(h) = self.stack.pop()
        {
            self.steps += 1;
            self.at[h].pop();
        }
    }

    /// Where the outermost open `h` is.
    fn first(&self, h: usize) -> Option<usize> {
        self.at[h].first().copied()
    }

    /// Where the innermost open `h` is.
    fn last(&self, h: usize) -> Option<usize> {
        self.at[h].last().copied()
    }

    /// Whether every open hidden element is an `h` (or none is open).
    fn only(&self, h: usize) -> bool {
        self.at[h].len() == self.stack.len()
    }
}

/// The text so far, and the length of its trailing run of spaces and newlines, kept
/// as text is added so that a separator never rescans it (megabytes of spaces
/// followed by millions of tags would make that quadratic).
#[derive(Default)]
struct Text {
    text: String,
    /// Bytes of the trailing run of `' '` and `'\n'`.
    blank: usize,
    /// Newlines in that run.
    newlines: usize,
    /// Bytes scanned and separators added, for [`run`]'s count.
    steps: usize,
}

impl Text {
    fn push_str(&mut self, s: &str) {
        self.steps += s.len();
        self.text.push_str(s);
        let body = s.trim_end_matches(['\n', ' ']);
        let tail = &s[body.len()..];
        let newlines = tail.bytes().filter(|&b| b == b'\n').count();
        if body.is_empty() {
            self.blank += tail.len();
            self.newlines += newlines;
        } else {
            self.blank = tail.len();
            self.newlines = newlines;
        }
    }

    /// Appends a separator unless the text already ends with one as strong.
    fn separate(&mut self, sep: &str) {
        self.steps += 1;
        let want = sep.matches('\n').count();
        if want > self.newlines {
            let more = want - self.newlines;
            self.text.extend(std::iter::repeat_n('\n', more));
            self.blank += more;
            self.newlines = want;
        } else if sep == " " && self.blank == 0 {
            self.text.push(' ');
            self.blank = 1;
        }
    }
}

/// What an element's edge puts into the text.
fn separator(name: &str) -> &'static str {
    if PARAGRAPHS.contains(&name) {
        "\n\n"
    } else if LINES.contains(&name) {
        "\n"
    } else if INLINE.contains(&name) {
        ""
    } else {
        " "
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_only() {
        let page = "<!doctype html><html><head><title>Hot &amp; Rocks</title><style>p{color:red}</style></head>\
                    <body><script>if (a < b) { zebra(); }</script><h1>Magma</h1><p>Lava &lt;flows&gt;&nbsp;fast.</p>\
                    <noscript>enable js</noscript><template><p>later</p></template><p>Second</p></body></html>";
        let x = html(page);
        assert_eq!(x.title.as_deref(), Some("Hot & Rocks"));
        assert!(x.text.contains("Magma"), "{}", x.text);
        assert!(x.text.contains("Lava <flows> fast."), "{}", x.text);
        for gone in ["zebra", "color", "enable js", "later", "Hot & Rocks"] {
            assert!(!x.text.contains(gone), "{gone} leaked into {:?}", x.text);
        }
        assert!(x.text.contains("fast.\n\nSecond"), "{:?}", x.text);
    }

    #[test]
    fn breaks_inline_elements_and_entities() {
        let x = html(
            "<p>Hawai<i>&#x2BB;</i>i has <b>basaltic</b> lava&hellip;</p><ul><li>one</li><li>two</li></ul>\
             line<br>break<table><tr><td>a</td><td>b</td></tr></table>",
        );
        assert_eq!(
            x.text,
            "Hawaiʻi has basaltic lava…\n\none\ntwo\n\nline\nbreak\n\na b"
        );
        assert_eq!(x.title, None);
    }

    #[test]
    fn unclosed_head_and_h1_title() {
        let x = html(
            "<html><head><meta charset=utf-8><h1>First <em>heading</em></h1><p>Body text.<h1>Second</h1>",
        );
        assert_eq!(x.title.as_deref(), Some("First heading"));
        assert!(
            x.text.starts_with("First heading\n\nBody text."),
            "{:?}",
            x.text
        );
    }

    #[test]
    fn head_index() {
        assert_eq!(HIDDEN[HEAD], "head");
    }

    /// Scanning the open elements on every tag made this quadratic: 200,000 open
    /// `<svg>`s cost 2·10¹⁰ steps.
    #[test]
    fn unclosed_hidden_elements_are_linear() {
        let page = format!("<p>shown</p>{}", "<svg>".repeat(200_000));
        let (x, steps) = run(&page);
        assert_eq!(x.text, "shown");
        assert!(
            steps <= 2 * page.len(),
            "{steps} steps for {} bytes",
            page.len()
        );
        // End tags of elements not open, with the stack deep.
        let page = format!(
            "<p>shown</p>{}{}",
            "<svg>".repeat(100_000),
            "</script><i>".repeat(100_000)
        );
        let (x, steps) = run(&page);
        assert_eq!(x.text, "shown");
        assert!(
            steps <= 2 * page.len(),
            "{steps} steps for {} bytes",
            page.len()
        );
    }

    /// Rescanning the trailing whitespace at every tag made this quadratic: 25 MB of
    /// spaces and 2,000,000 tags cost 5·10¹³ steps.
    #[test]
    fn trailing_whitespace_is_not_rescanned() {
        let page = format!("word{}{}", " ".repeat(25 << 20), "<b>".repeat(2_000_000));
        let (x, steps) = run(&page);
        assert_eq!(x.text, "word");
        assert!(
            steps <= 2 * page.len(),
            "{steps} steps for {} bytes",
            page.len()
        );
    }
}
