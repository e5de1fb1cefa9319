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
    let mut emitter = DefaultEmitter::default();
    // Script and style content is raw text, not markup.
    emitter.naively_switch_states(true);
    let mut text = String::new();
    let mut hidden: Vec<String> = Vec::new();
    let (mut title, mut h1) = (String::new(), String::new());
    let (mut title_done, mut h1_done) = (false, false);
    let mut capture = Capture::None;
    for token in Tokenizer::new_with_emitter(source, emitter).flatten() {
        match token {
            Token::StartTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                let name = name.as_str();
                if !HEAD_CONTENT.contains(&name)
                    && let Some(at) = hidden.iter().position(|h| h == "head")
                {
                    hidden.truncate(at);
                }
                if name == "title" && !title_done && hidden.iter().all(|h| h == "head") {
                    capture = Capture::Title;
                } else if name == "h1" && !h1_done && hidden.is_empty() {
                    capture = Capture::Heading;
                }
                if HIDDEN.contains(&name) && !tag.self_closing {
                    hidden.push(name.to_owned());
                }
                push_separator(&mut text, separator(name));
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
                if let Some(at) = hidden.iter().rposition(|h| h == name) {
                    hidden.truncate(at);
                }
                push_separator(&mut text, separator(name));
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
    Extracted {
        text: tidy(&text),
        title: clip_title(&title).or_else(|| clip_title(&h1)),
        pages: None,
    }
}

/// Appends a separator unless the text already ends with one as strong.
fn push_separator(text: &mut String, sep: &str) {
    let have = text.len() - text.trim_end_matches(['\n', ' ']).len();
    let newlines = text[text.len() - have..].matches('\n').count();
    let want = sep.matches('\n').count();
    if want > newlines {
        text.push_str(&"\n".repeat(want - newlines));
    } else if sep == " " && have == 0 {
        text.push(' ');
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
}
