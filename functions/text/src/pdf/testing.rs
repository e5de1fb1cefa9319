//! A small PDF writer for tests (and for the committed `glacier.pdf` fixture): objects
//! in order, a correct xref table, Helvetica text pages, and zlib streams made of
//! stored deflate blocks so that `/FlateDecode` is exercised without a compressor.

/// A PDF from numbered objects (object `i + 1` is `objects[i]`), `/Root 1 0 R`.
pub(crate) fn build(objects: &[Vec<u8>], trailer_extra: &str) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend(body);
        out.extend(b"\nendobj\n");
    }
    let xref = out.len();
    let size = objects.len() + 1;
    out.extend(format!("xref\n0 {size}\n0000000000 65535 f \n").as_bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {size} /Root 1 0 R {trailer_extra} >>\nstartxref\n{xref}\n%%EOF\n"
        )
        .as_bytes(),
    );
    out
}

/// A stream object: `dict_extra` goes into its dictionary next to `/Length`.
pub(crate) fn stream(dict_extra: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("<< /Length {} {dict_extra} >>\nstream\n", data.len()).into_bytes();
    out.extend(data);
    out.extend(b"\nendstream");
    out
}

/// `data` as a zlib stream of stored (uncompressed) deflate blocks.
pub(crate) fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65_535).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

/// `data` in ASCII base-85, as `/ASCII85Decode` reads it.
pub(crate) fn ascii_85(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for group in data.chunks(4) {
        let mut word = [0u8; 4];
        word[..group.len()].copy_from_slice(group);
        let mut value = u32::from_be_bytes(word);
        if group.len() == 4 && value == 0 {
            out.push(b'z');
            continue;
        }
        let mut digits = [0u8; 5];
        for d in digits.iter_mut().rev() {
            *d = b'!' + (value % 85) as u8;
            value /= 85;
        }
        out.extend(&digits[..group.len() + 1]);
    }
    out.extend(b"~>");
    out
}

/// Escapes a literal string for a content stream.
pub(crate) fn literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('(', "\\(")
        .replace(')', "\\)")
}

/// Content showing `lines` in 12 pt Helvetica, one `Tj` per line, `T*` between.
pub(crate) fn lines(lines: &[&str]) -> String {
    let mut ops = String::from("BT /F1 12 Tf 72 720 Td 16 TL\n");
    for line in lines {
        ops.push_str(&format!("({}) Tj T*\n", literal(line)));
    }
    ops.push_str("ET");
    ops
}

/// A document whose pages have these contents, with font `/F1` (Helvetica,
/// WinAnsi) and an optional title; contents of pages past the first are compressed
/// when `compress` is set.
pub(crate) fn document(pages: &[String], title: Option<&str>, compress: bool) -> Vec<u8> {
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        Vec::new(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    ];
    let mut kids = Vec::new();
    for (i, content) in pages.iter().enumerate() {
        let page = objects.len() + 1;
        kids.push(format!("{page} 0 R"));
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                page + 1
            )
            .into_bytes(),
        );
        objects.push(if compress && i > 0 {
            stream("/Filter /FlateDecode", &zlib_stored(content.as_bytes()))
        } else {
            stream("", content.as_bytes())
        });
    }
    objects[1] = format!(
        "<< /Type /Pages /Kids [{}] /Count {} >>",
        kids.join(" "),
        kids.len()
    )
    .into_bytes();
    let mut trailer = String::new();
    if let Some(title) = title {
        objects.push(
            format!("<< /Title ({}) /Producer (troupe tests) >>", literal(title)).into_bytes(),
        );
        trailer = format!("/Info {} 0 R", objects.len());
    }
    build(&objects, &trailer)
}
