//! Runs content streams for their text: the text state and matrices of the PDF
//! reference, enough to tell where a shown string lands relative to the last one
//! (same line, a word gap, a new line or paragraph). Form XObjects are followed.

use std::collections::HashMap;
use std::rc::Rc;

use hayro_syntax::content::UntypedIter;
use hayro_syntax::object::{Dict, Name, Object, ObjectIdentifier, Stream};
use hayro_syntax::page::Resources;

use super::font::Font;

/// Forms drawn inside forms, at most.
const MAX_FORM_DEPTH: usize = 8;
/// Saved graphics states (`q`), at most; deeper saves are ignored.
const MAX_SAVED: usize = 256;
/// A gap wider than this share of the text size is a space between words.
const WORD_GAP: f64 = 0.15;
/// A shift across the line of more than this share of the size starts a new line…
const LINE_SHIFT: f64 = 0.5;
/// …and more than this, a new paragraph.
const PARAGRAPH_SHIFT: f64 = 1.9;

/// What one document may cost, shared by its pages.
pub(super) struct Budget {
    /// Content operators left to run.
    pub(super) ops: usize,
    /// Bytes of text left to produce.
    pub(super) text: usize,
}

/// Fonts already read, by object (shared by the pages that use them).
#[derive(Default)]
pub(super) struct Fonts(HashMap<ObjectIdentifier, Rc<Font>>);

type Matrix = [f64; 6];
const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

/// `m` then `n`, as the PDF reference multiplies them.
fn mul(m: &Matrix, n: &Matrix) -> Matrix {
    let r = [
        m[0] * n[0] + m[1] * n[2],
        m[0] * n[1] + m[1] * n[3],
        m[2] * n[0] + m[3] * n[2],
        m[2] * n[1] + m[3] * n[3],
        m[4] * n[0] + m[5] * n[2] + n[4],
        m[4] * n[1] + m[5] * n[3] + n[5],
    ];
    if r.iter().all(|v| v.is_finite()) {
        r
    } else {
        IDENTITY
    }
}

fn translate(tx: f64, ty: f64) -> Matrix {
    [1.0, 0.0, 0.0, 1.0, tx, ty]
}

/// The graphics state parts that matter for text.
#[derive(Clone)]
struct State {
    ctm: Matrix,
    font: Option<Rc<Font>>,
    size: f64,
    char_spacing: f64,
    word_spacing: f64,
    /// Horizontal scaling, as a factor.
    scaling: f64,
    leading: f64,
}

/// Where the last shown text ended, in user space, and which way its lines run.
#[derive(Clone, Copy)]
struct Pen {
    x: f64,
    y: f64,
    /// Unit vector along the line.
    along: (f64, f64),
    /// Unit vector up the page, across the line.
    up: (f64, f64),
    size: f64,
}

/// The text of one page.
pub(super) fn page_text(
    content: &[u8],
    resources: &Resources<'_>,
    fonts: &mut Fonts,
    budget: &mut Budget,
) -> String {
    let mut run = Run {
        out: String::new(),
        pen: None,
        fonts,
        budget,
    };
    let state = State {
        ctm: IDENTITY,
        font: None,
        size: 0.0,
        char_spacing: 0.0,
        word_spacing: 0.0,
        scaling: 1.0,
        leading: 0.0,
    };
    run.stream(content, resources, state, 0);
    run.out
}

struct Run<'f> {
    out: String,
    pen: Option<Pen>,
    fonts: &'f mut Fonts,
    budget: &'f mut Budget,
}

impl Run<'_> {
    fn stream(&mut self, content: &[u8], resources: &Resources<'_>, state: State, depth: usize) {
        let mut gs = state;
        let mut saved: Vec<State> = Vec::new();
        let (mut tm, mut tlm) = (IDENTITY, IDENTITY);
        let mut by_name: HashMap<Vec<u8>, Rc<Font>> = HashMap::new();
        let mut ops = UntypedIter::new(content);
        while let Some(op) = ops.next() {
            if self.budget.ops == 0 || self.budget.text == 0 {
                return;
            }
            self.budget.ops -= 1;
            let args: Vec<&Object<'_>> = op.operands().collect();
            let num = |i: usize| match args.get(i) {
                Some(Object::Number(n)) => Some(n.as_f64()).filter(|v| v.is_finite()),
                _ => None,
            };
            let operator: &[u8] = op.operator;
            match operator {
                b"q" if saved.len() < MAX_SAVED => saved.push(gs.clone()),
                b"Q" => {
                    if let Some(s) = saved.pop() {
                        gs = s;
                    }
                }
                b"cm" => {
                    if let Some(m) = matrix(&num) {
                        gs.ctm = mul(&m, &gs.ctm);
                    }
                }
                b"BT" => (tm, tlm) = (IDENTITY, IDENTITY),
                b"Tf" => {
                    if let (Some(Object::Name(name)), Some(size)) = (args.first(), num(1)) {
                        gs.font = self.font(resources, name, &mut by_name);
                        gs.size = size;
                    }
                }
                b"Tc" => gs.char_spacing = num(0).unwrap_or(gs.char_spacing),
                b"Tw" => gs.word_spacing = num(0).unwrap_or(gs.word_spacing),
                b"Tz" => gs.scaling = num(0).map_or(gs.scaling, |v| v / 100.0),
                b"TL" => gs.leading = num(0).unwrap_or(gs.leading),
                b"Td" | b"TD" => {
                    if let (Some(tx), Some(ty)) = (num(0), num(1)) {
                        if operator == b"TD" {
                            gs.leading = -ty;
                        }
                        tlm = mul(&translate(tx, ty), &tlm);
                        tm = tlm;
                    }
                }
                b"Tm" => {
                    if let Some(m) = matrix(&num) {
                        (tm, tlm) = (m, m);
                    }
                }
                b"T*" => {
                    tlm = mul(&translate(0.0, -gs.leading), &tlm);
                    tm = tlm;
                }
                b"Tj" | b"'" | b"\"" => {
                    if operator != b"Tj" {
                        if operator == b"\"" {
                            gs.word_spacing = num(0).unwrap_or(gs.word_spacing);
                            gs.char_spacing = num(1).unwrap_or(gs.char_spacing);
                        }
                        tlm = mul(&translate(0.0, -gs.leading), &tlm);
                        tm = tlm;
                    }
                    if let Some(Object::String(s)) = args.last() {
                        self.show(s.as_bytes(), &gs, &mut tm);
                    }
                }
                b"TJ" => {
                    if let Some(Object::Array(items)) = args.first() {
                        for item in items.iter::<Object<'_>>() {
                            match item {
                                Object::String(s) => self.show(s.as_bytes(), &gs, &mut tm),
                                Object::Number(n) if n.as_f64().is_finite() => {
                                    let tx = -n.as_f64() / 1000.0 * gs.size * gs.scaling;
                                    tm = mul(&translate(tx, 0.0), &tm);
                                }
                                _ => {}
                            }
                        }
                    }
                }
                b"Do" if depth < MAX_FORM_DEPTH => {
                    if let Some(Object::Name(name)) = args.first()
                        && let Some(form) = resources.get_x_object(name)
                    {
                        self.form(&form, resources, &gs, depth);
                    }
                }
                _ => {}
            }
        }
    }

    /// Draws a Form XObject: its own matrix and resources, the caller's state.
    fn form(&mut self, form: &Stream<'_>, parent: &Resources<'_>, gs: &State, depth: usize) {
        let dict = form.dict();
        if dict
            .get::<Name<'_>>(b"Subtype")
            .is_none_or(|s| s.as_ref() != b"Form")
        {
            return;
        }
        let Ok(content) = form.decoded() else { return };
        let resources = dict
            .get::<Dict<'_>>(b"Resources")
            .map_or_else(|| parent.clone(), Resources::new);
        let mut inner = gs.clone();
        if let Some(m) = dict.get::<[f32; 6]>(b"Matrix") {
            let m = m.map(f64::from);
            inner.ctm = mul(&m, &inner.ctm);
        }
        self.stream(&content, &resources, inner, depth + 1);
    }

    fn font(
        &mut self,
        resources: &Resources<'_>,
        name: &Name<'_>,
        by_name: &mut HashMap<Vec<u8>, Rc<Font>>,
    ) -> Option<Rc<Font>> {
        let key: &[u8] = name.as_ref();
        if let Some(f) = by_name.get(key) {
            return Some(f.clone());
        }
        // A font the resources lack still shows its text, decoded as Standard.
        let dict = resources.get_font(name).unwrap_or_else(Dict::empty);
        let font = match dict.obj_id() {
            Some(id) => self
                .fonts
                .0
                .entry(id)
                .or_insert_with(|| Rc::new(Font::new(&dict)))
                .clone(),
            None => Rc::new(Font::new(&dict)),
        };
        by_name.insert(key.to_vec(), font.clone());
        Some(font)
    }

    /// Shows a string: places it against the pen, appends its text, advances `tm`.
    fn show(&mut self, bytes: &[u8], gs: &State, tm: &mut Matrix) {
        let Some(font) = gs.font.clone() else { return };
        let start = mul(tm, &gs.ctm);
        let mut text = String::new();
        for code in font.codes(bytes) {
            font.text(&code, &mut text);
            let spacing = if code.len == 1 && code.code == 32 {
                gs.word_spacing
            } else {
                0.0
            };
            let tx = (font.width(&code) * gs.size + gs.char_spacing + spacing) * gs.scaling;
            *tm = mul(&translate(tx, 0.0), tm);
        }
        if text.is_empty() {
            return;
        }
        let end = mul(tm, &gs.ctm);
        let along = unit(start[0], start[1]);
        let up = unit(start[2], start[3]);
        let size = (gs.size * start[2].hypot(start[3])).abs().max(1e-6);
        self.place(start[4], start[5], size, &text);
        if text.len() > self.budget.text {
            self.budget.text = 0;
            return;
        }
        self.budget.text -= text.len();
        self.out.push_str(&text);
        self.pen = Some(Pen {
            x: end[4],
            y: end[5],
            along,
            up,
            size,
        });
    }

    /// Separates text starting at (x, y) from what came before: nothing, a space,
    /// a line break or a paragraph break.
    fn place(&mut self, x: f64, y: f64, size: f64, next: &str) {
        let Some(pen) = self.pen else { return };
        let (dx, dy) = (x - pen.x, y - pen.y);
        let along = dx * pen.along.0 + dy * pen.along.1;
        let across = dx * pen.up.0 + dy * pen.up.1;
        let h = pen.size.max(size);
        let gap = if across.abs() > PARAGRAPH_SHIFT * h {
            "\n\n"
        } else if across.abs() > LINE_SHIFT * h || along < -4.0 * h {
            "\n"
        } else if along > WORD_GAP * h {
            " "
        } else {
            ""
        };
        let joined =
            self.out.ends_with(char::is_whitespace) || next.starts_with(char::is_whitespace);
        if gap == " " && joined {
            return;
        }
        self.out.push_str(gap);
    }
}

fn matrix(num: &dyn Fn(usize) -> Option<f64>) -> Option<Matrix> {
    Some([num(0)?, num(1)?, num(2)?, num(3)?, num(4)?, num(5)?])
}

fn unit(x: f64, y: f64) -> (f64, f64) {
    let n = x.hypot(y);
    if n > 1e-9 && n.is_finite() {
        (x / n, y / n)
    } else {
        (1.0, 0.0)
    }
}
