//! PDF extraction on generated documents, and on damaged and hostile ones.

use super::testing::{ascii_85, build, document, lines, stream, zlib_stored};
use super::*;

fn text_of(pdf: &[u8]) -> String {
    extract(pdf).unwrap().text
}

/// One page with `content` and these resources; `extra` are objects 5 onwards.
fn page_with(content: &[u8], resources: &str, extra: &[Vec<u8>]) -> Vec<u8> {
    let mut objects = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!("<< /Type /Page /Parent 2 0 R /Resources << {resources} >> /Contents 4 0 R >>")
            .into_bytes(),
        stream("", content),
    ];
    objects.extend(extra.iter().cloned());
    build(&objects, "")
}

#[test]
fn pages_title_and_text() {
    let pdf = document(
        &[
            lines(&["Glaciers carve valleys.", "Second line (with parens)."]),
            lines(&["Page two: moraine & fjord."]),
        ],
        Some("Ice (and) Snow"),
        true,
    );
    let x = extract(&pdf).unwrap();
    assert_eq!(x.pages, Some(2));
    assert_eq!(x.title.as_deref(), Some("Ice (and) Snow"));
    assert_eq!(
        x.text,
        "Glaciers carve valleys.\nSecond line (with parens).\n\nPage two: moraine & fjord."
    );
    let untitled = document(&[lines(&["x"])], None, false);
    assert_eq!(extract(&untitled).unwrap().title, None);
}

#[test]
fn positioning_becomes_spaces_and_breaks() {
    let f1 = "/Font << /F1 5 0 R >>";
    let font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /FirstChar 32 /LastChar 126 /Widths [ 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 600 ] >>".to_vec();
    let content =
        b"BT /F1 10 Tf 72 700 Td [(Word)-50(s)-400(apart)] TJ (glued) Tj 150 0 Td (gap) Tj\n\
                    0 -12 Td (next line) Tj 0 -40 Td (new paragraph) Tj\n\
                    14 TL (quote) ' 2 1 (dquote) \" ET\n\
                    BT 1 0 0 1 72 500 Tm (matrix) Tj ET\n\
                    q 1 0 0 1 0 -100 cm BT /F1 10 Tf 72 500 Td (moved by cm) Tj ET Q";
    let x = text_of(&page_with(content, f1, &[font]));
    assert_eq!(
        x,
        "Words apartglued gap\nnext line\n\nnew paragraph\nquote\ndquote\n\nmatrix\n\nmoved by cm"
    );
}

#[test]
fn differences_to_unicode_and_forms() {
    let cmap = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
        1 begincodespacerange <0000> <FFFF> endcodespacerange\n\
        2 beginbfchar <0001> <0049> <0002> <00660069> endbfchar\n\
        1 beginbfrange <0010> <0012> <0061> endbfrange\n\
        endcmap CMapName currentdict /CMap defineresource pop end end";
    let content = b"BT /F1 10 Tf 72 700 Td (\x01\x02\x03\x04\x05\x06\x07 \x08\x09\xe9) Tj ET\n\
                    BT /F2 10 Tf 72 688 Td <0001 0002 0010 0011 0012 FFFF> Tj ET\n\
                    q 1 0 0 1 72 600 cm /X1 Do Q";
    let objects = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 5 0 R /F2 6 0 R >> \
          /XObject << /X1 8 0 R >> >> /Contents 4 0 R >>"
            .to_vec(),
        stream("", content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /X /Encoding << /BaseEncoding /WinAnsiEncoding \
          /Differences [ 1 /g /l /a /c /i /e /r /fi /eacute ] >> >>"
            .to_vec(),
        b"<< /Type /Font /Subtype /Type0 /BaseFont /Y /Encoding /Identity-H /DescendantFonts \
          [ << /Type /Font /Subtype /CIDFontType2 /DW 500 /W [ 1 [ 300 ] 16 18 400 ] >> ] \
          /ToUnicode 7 0 R >>"
            .to_vec(),
        stream("/Filter /FlateDecode", &zlib_stored(cmap)),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 100 100] /Resources << /Font << /F9 6 0 R >> >>",
            b"BT /F9 10 Tf 0 0 Td <0010 0011> Tj ET",
        ),
    ];
    assert_eq!(text_of(&build(&objects, "")), "glacier fiéé\nIfiabc\n\nab");
}

/// Runs `f` on a thread with a stack no bigger than a wasm guest's, so that deep
/// recursion shows up here as it would there.
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// xorshift: deterministic noise.
fn noise(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn sample() -> Vec<u8> {
    document(
        &[
            lines(&[
                "A glacier is a body of dense ice.",
                "It moves under its own weight.",
            ]),
            lines(&["A moraine is rock the ice left behind."]),
        ],
        Some("Glaciers"),
        true,
    )
}

#[test]
fn undecodable_content_is_corrupt_and_no_text_is_empty() {
    let broken = build(
        &[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>".to_vec(),
            stream("/Filter /DCTDecode", b"BT /F1 9 Tf (hidden) Tj ET"),
        ],
        "",
    );
    let e = extract(&broken).unwrap_err();
    assert_eq!(e.code(), "corrupt", "{e}");
    let blank = page_with(b"0 0 m 10 10 l S", "", &[]);
    assert_eq!(extract(&blank).unwrap().text, "");
    let e = crate::extract(crate::Kind::Pdf, &blank).unwrap_err();
    assert_eq!(e.code(), "empty");
    // A font missing from the resources still shows its text.
    let orphan = page_with(b"BT /F7 12 Tf (orphan text) Tj ET", "", &[]);
    assert_eq!(text_of(&orphan), "orphan text");
}

#[test]
fn truncated_files_are_corrupt() {
    let whole = sample();
    let eof = whole.windows(5).rposition(|w| w == b"%%EOF").unwrap();
    for cut in 0..whole.len() {
        let result = extract(&whole[..cut]);
        if cut < eof + 5 {
            assert_eq!(result.unwrap_err().code(), "corrupt", "cut at {cut}");
        }
    }
}

#[test]
fn garbage_is_corrupt() {
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for round in 0..300 {
        let len = (noise(&mut seed) % 4000) as usize;
        let junk: Vec<u8> = (0..len).map(|_| noise(&mut seed) as u8).collect();
        assert_eq!(
            extract(&junk).unwrap_err().code(),
            "corrupt",
            "round {round}"
        );
        let mut framed = b"%PDF-1.7\n".to_vec();
        framed.extend(&junk);
        framed.extend(b"\n%%EOF\n");
        assert_eq!(
            extract(&framed).unwrap_err().code(),
            "corrupt",
            "round {round}"
        );
    }
    let e =
        extract(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n%%EOF").unwrap_err();
    assert_eq!(e.code(), "corrupt");
}

#[test]
fn mutated_files_never_panic() {
    small_stack(|| {
        let whole = sample();
        let mut seed = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3000 {
            let mut bytes = whole.clone();
            for _ in 0..1 + noise(&mut seed) % 4 {
                let at = (noise(&mut seed) as usize) % bytes.len();
                match noise(&mut seed) % 4 {
                    0 => bytes[at] = noise(&mut seed) as u8,
                    1 => bytes[at] = b"0123456789 <>[]()/R"[(noise(&mut seed) % 19) as usize],
                    2 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b"0123456789"[(noise(&mut seed) % 10) as usize]),
                }
            }
            let _ = extract(&bytes);
        }
    });
}

#[test]
fn hostile_structures_are_refused_or_read() {
    let catalog = b"<< /Type /Catalog /Pages 2 0 R >>".to_vec();
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_dict = "<< /A ".repeat(50_000).into_bytes();
    let deep_content = stream(
        "",
        format!("BT /F1 9 Tf {} ET", "[".repeat(100_000)).as_bytes(),
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("kids cycle", build(&[catalog.clone(), b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>".to_vec()], "")),
        ("self reference", build(&[catalog.clone(), b"2 0 R".to_vec()], "")),
        ("deep array", build(&[catalog.clone(), deep_array], "")),
        ("deep dict", build(&[catalog.clone(), deep_dict], "")),
        ("deep content", page_with(&deep_content, "", &[])),
        ("huge xref", b"%PDF-1.4\nxref\n0 4000000000\n0000000000 65535 f \ntrailer\n<< /Size 4000000000 /Root 1 0 R >>\nstartxref\n9\n%%EOF\n".to_vec()),
        ("startxref overflow", b"%PDF-1.4\nstartxref\n99999999999999999999999\n%%EOF\n".to_vec()),
        ("prev cycle", b"%PDF-1.4\nxref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size 1 /Root 1 0 R /Prev 9 >>\nstartxref\n9\n%%EOF\n".to_vec()),
        ("huge length", page_with(b"", "", &[]).into_iter().chain(b"5 0 obj << /Length 99999999999 >>\nstream\nBT ET\nendstream endobj".iter().copied()).collect()),
        ("bad filter", build(&[catalog.clone(), b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(), b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>".to_vec(), stream("/Filter [/FlateDecode /LZWDecode /ASCII85Decode] /DecodeParms << /Predictor 12 /Columns 4000000000 /Colors 99 >>", b"garbage")], "")),
        ("encrypted", build(&[catalog.clone(), b"<< /Type /Pages /Kids [] /Count 0 >>".to_vec(), b"<< /Filter /Standard /V 5 /R 6 /O (x) /U (y) /P -1 >>".to_vec()], "/Encrypt 3 0 R /ID [(a) (b)]")),
    ];
    small_stack(move || {
        for (name, bytes) in cases {
            match extract(&bytes) {
                Ok(x) => assert!(!x.text.contains('\0'), "{name}"),
                Err(e) => assert!(["corrupt", "empty"].contains(&e.code()), "{name}: {e}"),
            }
        }
    });
}

#[test]
fn hostile_content_is_bounded() {
    // Forms drawing themselves, many times each, deeper than any real document.
    let fonts = "/Font << /F1 5 0 R >> /XObject << /X1 6 0 R >>";
    let font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec();
    let form = stream(
        "/Type /XObject /Subtype /Form /BBox [0 0 9 9] /Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >>",
        format!("BT /F1 9 Tf (ice) Tj ET {}", "/X1 Do ".repeat(200)).as_bytes(),
    );
    let pdf = page_with(b"/X1 Do", fonts, &[font, form]);
    let started = std::time::Instant::now();
    let x = small_stack(move || extract(&pdf)).unwrap();
    assert!(x.text.contains("ice"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn forms_are_decoded_once() {
    let resources = "/Font << /F1 5 0 R >> /XObject << /X1 6 0 R >>";
    let font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec();
    let form = stream(
        "/Type /XObject /Subtype /Form /BBox [0 0 9 9] /Filter /FlateDecode",
        &zlib_stored(b"BT /F1 9 Tf (ice) Tj ET"),
    );
    let pdf = page_with(
        "/X1 Do\n".repeat(100_000).as_bytes(),
        resources,
        &[font, form],
    );
    let (x, spent) = extract_with(&pdf, LIMITS).unwrap();
    assert!(x.text.starts_with("iceice"), "{}", &x.text[..20]);
    // The page's content and the form, once each.
    assert_eq!(spent.decodes, 2);
    // Without the cache, the form is decoded at every draw (as it was before the
    // cache), and every decode counts against the document's budget.
    let uncached = Limits {
        cached: 0,
        ..LIMITS
    };
    assert_eq!(extract_with(&pdf, uncached).unwrap().1.decodes, 100_001);
    let small = Limits {
        cached: 0,
        decoded: 1 << 20,
        ..LIMITS
    };
    assert_eq!(extract_with(&pdf, small).unwrap_err().code(), "too_large");
}

#[test]
fn big_operators_drawn_often_are_bounded() {
    // One operator of 300 KB, drawn 100,000 times: 30 GB to parse, though only
    // 200,000 operators run. A `TJ` of numbers (no text) counts its elements as
    // operators; any other operator, its bytes.
    let resources = "/Font << /F1 5 0 R >> /XObject << /X1 6 0 R >>";
    let font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec();
    let tj = format!("[{}] TJ", "-1 ".repeat(100_000));
    let string = format!("({}) foo", "x".repeat(300_000));
    for big in [tj, string] {
        let content = format!("BT /F1 9 Tf {big} (ice) Tj ET");
        let form = stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 9 9]",
            content.as_bytes(),
        );
        let pdf = page_with(
            "/X1 Do\n".repeat(100_000).as_bytes(),
            resources,
            &[font.clone(), form],
        );
        let (x, spent) = extract_with(&pdf, LIMITS).unwrap();
        assert!(x.text.starts_with("iceice"));
        assert!(spent.read <= MAX_READ && spent.ops <= MAX_OPS, "{spent:?}");
        let draws = x.text.len() / 3;
        assert!(draws < 1000, "{draws} draws: {spent:?}");
    }
}

#[test]
fn zip_bombs_are_too_large() {
    use miniz_oxide::deflate::compress_to_vec_zlib;
    let zeros = vec![0u8; 64 << 20];
    let once = compress_to_vec_zlib(&zeros, 6);
    let twice = compress_to_vec_zlib(&once, 6);
    let hex: String = once.iter().map(|b| format!("{b:02x}")).collect();
    let limits = Limits {
        decoded: 16 << 20,
        ..LIMITS
    };
    let bombs = [
        ("/FlateDecode", once.clone()),
        ("[/FlateDecode /FlateDecode]", twice),
        ("[/ASCIIHexDecode /FlateDecode]", hex.into_bytes()),
        ("[/ASCII85Decode /FlateDecode]", ascii_85(&once)),
    ];
    for (filter, data) in bombs {
        assert!(data.len() < 1 << 20, "{filter}: {}", data.len());
        let pdf = page_with_filter(&data, filter);
        let e = extract_with(&pdf, limits).unwrap_err();
        assert_eq!(e.code(), "too_large", "{filter}: {e}");
        assert!(e.to_string().contains("16 MiB"), "{e}");
    }
    // Under the default limit: many streams, each inflating to 16 MiB.
    const { assert!(20 * (16 << 20) > MAX_DECODED) };
    let sixteen = compress_to_vec_zlib(&zeros[..16 << 20], 6);
    let mut objects = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        Vec::new(),
    ];
    let mut contents = Vec::new();
    for _ in 0..20 {
        objects.push(stream("/Filter /FlateDecode", &sixteen));
        contents.push(format!("{} 0 R", objects.len()));
    }
    objects[2] = format!(
        "<< /Type /Page /Parent 2 0 R /Contents [{}] >>",
        contents.join(" ")
    )
    .into_bytes();
    let e = crate::extract(crate::Kind::Pdf, &build(&objects, "")).unwrap_err();
    assert_eq!(e.code(), "too_large", "{e}");
    let limit = format!("{} MiB", MAX_DECODED >> 20);
    assert!(e.to_string().contains(&limit), "{e}");
}

/// One page whose content is `data` under `/Filter filter`.
fn page_with_filter(data: &[u8], filter: &str) -> Vec<u8> {
    build(
        &[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>"
                .to_vec(),
            stream(&format!("/Filter {filter}"), data),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        ],
        "",
    )
}

#[test]
fn filter_chains_decode() {
    let content = lines(&["Chained filters still read."]);
    let flate = zlib_stored(content.as_bytes());
    let hex: String = flate.iter().map(|b| format!("{b:02X} ")).collect();
    // A stored block whose length check is wrong: read anyway, as before.
    let mut damaged = flate.clone();
    damaged[5..7].copy_from_slice(&[0, 0]);
    for (filter, data) in [
        ("/FlateDecode", flate.clone()),
        ("/Fl", flate.clone()),
        ("/FlateDecode", damaged),
        ("[/ASCII85Decode /FlateDecode]", ascii_85(&flate)),
        ("[/AHx /Fl]", format!("{hex}>").into_bytes()),
        ("/ASCII85Decode", ascii_85(content.as_bytes())),
        ("[/FlateDecode /FlateDecode]", zlib_stored(&flate)),
        (
            "/FlateDecode /DecodeParms << /Predictor 1 >>",
            flate.clone(),
        ),
    ] {
        let x = extract(&page_with_filter(&data, filter)).unwrap();
        assert_eq!(x.text, "Chained filters still read.", "{filter}");
    }
}

/// The committed fixture `tests/fixtures/pipeline/glacier.pdf`: two pages about
/// glaciers, the second page's content compressed. Regenerate with
/// `cargo test -p troupe-text --target x86_64-unknown-linux-gnu -- --ignored glacier_fixture`.
fn glacier_fixture() -> Vec<u8> {
    let first = [
        "Glaciers and Ice Ages",
        "",
        "A glacier is a persistent body of dense ice that moves under its own weight.",
        "Glaciers form where snow accumulates faster than it melts, year after year,",
        "until the buried snow recrystallises into firn and finally into glacial ice.",
        "Today glaciers cover about ten percent of the land surface of the Earth,",
        "mostly in the ice sheets of Antarctica and Greenland.",
        "",
        "During the ice ages, continental ice sheets spread across North America",
        "and northern Europe. The last glacial maximum was about twenty thousand",
        "years ago, when sea level stood some 120 metres lower than it does today.",
    ];
    let second = [
        "How glaciers shape the land",
        "",
        "As a glacier flows downhill it plucks and grinds the bedrock beneath it,",
        "carving U-shaped valleys, cirques and the deep fjords of Norway.",
        "Rock debris pushed and dropped by the ice forms a ridge called a moraine.",
        "Erratic boulders carried far from home mark where the ice once reached.",
        "",
        "Meltwater from retreating glaciers feeds rivers and raises sea level.",
        "Ice cores drilled from glaciers hold bubbles of ancient air that record",
        "the climate of the past eight hundred thousand years.",
    ];
    document(
        &[lines(&first), lines(&second)],
        Some("Glaciers and Ice Ages"),
        true,
    )
}

#[test]
fn glacier_fixture_is_current() {
    let path = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../tests/fixtures/pipeline/glacier.pdf");
    assert_eq!(
        std::fs::read(path).unwrap(),
        glacier_fixture(),
        "regenerate: cargo test -p troupe-text -- --ignored write_glacier_fixture"
    );
}

#[test]
#[ignore = "writes tests/fixtures/pipeline/glacier.pdf"]
fn write_glacier_fixture() {
    let path = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../tests/fixtures/pipeline/glacier.pdf");
    std::fs::write(path, glacier_fixture()).unwrap();
}
