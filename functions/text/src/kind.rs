//! Document kinds: from a media type, a file name, or the bytes themselves.

/// Document kinds the pipeline can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain UTF-8 text.
    Text,
    /// CommonMark.
    Markdown,
    /// HTML: visible text only.
    Html,
    /// PDF: the text of every page.
    Pdf,
}

impl Kind {
    /// From a `Content-Type` value; parameters and case are ignored.
    pub fn from_media_type(content_type: &str) -> Option<Kind> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Some(Kind::Text),
            "text/markdown" | "text/x-markdown" => Some(Kind::Markdown),
            "text/html" | "application/xhtml+xml" => Some(Kind::Html),
            "application/pdf" => Some(Kind::Pdf),
            _ => None,
        }
    }

    /// From a file name's extension.
    pub fn from_name(name: &str) -> Option<Kind> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" | "log" => Some(Kind::Text),
            "md" | "markdown" => Some(Kind::Markdown),
            "html" | "htm" => Some(Kind::Html),
            "pdf" => Some(Kind::Pdf),
            _ => None,
        }
    }

    /// From the bytes: a PDF header, an HTML start, else UTF-8 text without NULs.
    pub fn sniff(bytes: &[u8]) -> Option<Kind> {
        if bytes.starts_with(b"%PDF-") {
            return Some(Kind::Pdf);
        }
        let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let start = body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(body.len());
        let head: Vec<u8> = body[start..]
            .iter()
            .take(16)
            .map(u8::to_ascii_lowercase)
            .collect();
        if [&b"<!doctype html"[..], b"<html", b"<head", b"<body"]
            .iter()
            .any(|p| head.starts_with(p))
        {
            return Some(Kind::Html);
        }
        let text = std::str::from_utf8(body).ok()?;
        (!text.contains('\0')).then_some(Kind::Text)
    }

    /// The canonical media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Text => "text/plain",
            Kind::Markdown => "text/markdown",
            Kind::Html => "text/html",
            Kind::Pdf => "application/pdf",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_types_names_and_bytes() {
        assert_eq!(
            Kind::from_media_type("Text/Plain; charset=utf-8"),
            Some(Kind::Text)
        );
        assert_eq!(Kind::from_media_type("application/pdf"), Some(Kind::Pdf));
        assert_eq!(Kind::from_media_type("image/png"), None);
        assert_eq!(Kind::from_name("Notes.MD"), Some(Kind::Markdown));
        assert_eq!(Kind::from_name("a.htm"), Some(Kind::Html));
        assert_eq!(Kind::from_name("noext"), None);
        assert_eq!(Kind::sniff(b"%PDF-1.7\n..."), Some(Kind::Pdf));
        assert_eq!(Kind::sniff(b"\n  <!DOCTYPE html><p>x"), Some(Kind::Html));
        assert_eq!(Kind::sniff("héllo".as_bytes()), Some(Kind::Text));
        assert_eq!(Kind::sniff(&[0x89, b'P', b'N', b'G', 0, 1]), None);
        assert_eq!(
            Kind::sniff(b"\xef\xbb\xbf <HEAD><title>x"),
            Some(Kind::Html)
        );
        assert_eq!(Kind::sniff(b"<body>"), Some(Kind::Html));
        assert_eq!(Kind::sniff(b"<p>fragment</p>"), Some(Kind::Text));
        assert_eq!(Kind::sniff(b"a\0b"), None);
        assert_eq!(Kind::sniff(b"\xff\xfe"), None);
        assert_eq!(Kind::sniff(b""), Some(Kind::Text));
        assert_eq!(
            Kind::from_media_type("text/x-markdown"),
            Some(Kind::Markdown)
        );
        assert_eq!(
            Kind::from_media_type(" APPLICATION/XHTML+XML ;q=1"),
            Some(Kind::Html)
        );
        assert_eq!(Kind::from_media_type(""), None);
        assert_eq!(Kind::from_name("server.LOG"), Some(Kind::Text));
        assert_eq!(Kind::from_name("a.markdown"), Some(Kind::Markdown));
        assert_eq!(Kind::from_name("scan.PDF"), Some(Kind::Pdf));
        assert_eq!(Kind::from_name("archive.tar.gz"), None);
        for kind in [Kind::Text, Kind::Markdown, Kind::Html, Kind::Pdf] {
            assert_eq!(Kind::from_media_type(kind.media_type()), Some(kind));
        }
    }
}
