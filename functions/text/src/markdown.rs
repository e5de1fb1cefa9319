//! Markdown: the text of headings, paragraphs, list items, quotes, tables and code;
//! markup, link targets and image URLs dropped; blocks separated by blank lines.

use crate::extract::{Extracted, clip_title, first_line, tidy};

/// Plain text of a CommonMark document; title from its first heading, else its first line.
pub(crate) fn markdown(source: &str) -> Extracted {
    use pulldown_cmark::{Event, LinkType, Parser, Tag, TagEnd};
    let mut text = String::new();
    let mut title = None;
    let mut heading: Option<String> = None;
    // Inside an autolink (`<https://…>`) the text is the URL itself: dropped.
    let mut in_autolink = false;
    for event in Parser::new(source) {
        match event {
            Event::Start(Tag::Heading { .. }) => {
                heading = Some(String::new());
                text.push_str("\n\n");
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = heading.take()
                    && title.is_none()
                {
                    title = clip_title(&h);
                }
                text.push_str("\n\n");
            }
            Event::Start(Tag::Link { link_type, .. }) => {
                in_autolink = matches!(link_type, LinkType::Autolink | LinkType::Email);
            }
            Event::End(TagEnd::Link) => in_autolink = false,
            Event::Text(t) | Event::Code(t) if !in_autolink => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
                text.push_str(&t);
            }
            Event::SoftBreak => text.push(' '),
            Event::HardBreak => text.push('\n'),
            Event::Start(
                Tag::Paragraph
                | Tag::Item
                | Tag::List(_)
                | Tag::CodeBlock(_)
                | Tag::BlockQuote(_)
                | Tag::Table(_)
                | Tag::TableRow
                | Tag::TableHead,
            )
            | Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::List(_)
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::Table
                | TagEnd::TableRow
                | TagEnd::TableHead,
            )
            | Event::Rule => text.push_str("\n\n"),
            Event::End(TagEnd::TableCell) => text.push(' '),
            _ => {}
        }
    }
    let text = tidy(&text);
    Extracted {
        title: title.or_else(|| first_line(&text)),
        text,
        pages: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_urls_dropped() {
        let md = "# Bread\n\nMix *flour* and [water](https://example.com/water).\n\n\
                  ![a loaf](https://img.example/loaf.png)\n\n- one\n- two\n\n```\ncode here\n```\n\n\
                  > quoted <https://auto.example/x>\n";
        let x = markdown(md);
        assert_eq!(x.title.as_deref(), Some("Bread"));
        assert!(x.text.contains("Mix flour and water."), "{}", x.text);
        assert!(x.text.contains("one\n\ntwo"), "{}", x.text);
        assert!(x.text.contains("code here"), "{}", x.text);
        assert!(x.text.contains("a loaf"), "{}", x.text);
        assert!(!x.text.contains("example.com"), "{}", x.text);
        assert!(!x.text.contains("img.example"), "{}", x.text);
        assert!(!x.text.contains("auto.example"), "{}", x.text);
        assert!(x.text.ends_with("quoted"), "{}", x.text);
        assert!(!x.text.contains('*') && !x.text.contains('#'), "{}", x.text);
    }

    #[test]
    fn title_falls_back_to_the_first_line() {
        let x = markdown("Just a *line*\nand more.\n\nNext.\n\n- a\n  - b\n");
        assert_eq!(x.title.as_deref(), Some("Just a line and more."));
        assert_eq!(x.text, "Just a line and more.\n\nNext.\n\na\n\nb");
    }
}
