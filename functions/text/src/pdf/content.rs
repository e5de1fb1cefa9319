//! Runs content streams for their text: the text state and matrices of the PDF
//! reference, enough to tell where a shown string lands relative to the last one
//! (same line, a word gap, a new line or paragraph). Form XObjects are followed;
//! each is read and decoded once per document, however often it is drawn.

use std::collections::HashMap;
use std::rc::Rc;

use hayro_syntax::content::UntypedIter;
use hayro_syntax::object::{Dict, Name, Object, ObjectIdentifier};
use hayro_syntax::page::Resources;

use super::decode::{Streams, TooLarge};
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
    /// Bytes of content streams (counted at every run: a form drawn again and again
    /// is parsed again and again) and of dictionaries read for them, left to read.
    /// Operators have no bound on their size, so `ops` alone does not bound the work.
    pub(super) bytes: usize,
}

/// What the pages of one document share: budgets, and what has been read.
pub(super) struct Document<'a> {
    pub(super) budget: Budget,
    pub(super) streams: Streams,
    /// Fonts already read.
    fonts: HashMap<FontKey, Rc<Font>>,
    /// Form XObjects by object, ready to draw; `None` for XObjects that are not
    /// forms or cannot be decoded.
    forms: HashMap<ObjectIdentifier, Option<Rc<Form<'a>>>>,
}

impl Document<'_> {
    pub(super) fn new(budget: Budget, streams: Streams) -> Self {
        Document {
            budget,
            streams,
            fonts: HashMap::new(),
            forms: HashMap::new(),
        }
    }
}

/// A Form XObject, read.
struct Form<'a> {
    content: Rc<[u8]>,
    /// Its own resources; without them, those of the stream that draws it.
    resources: Option<Resources<'a>>,
    matrix: Option<Matrix>,
}

/// Which font dictionary: an object, or one written inline, known by where its bytes
/// lie (so that a form drawn again and again does not reread it). They lie in the
/// document or in an object stream, which `hayro-syntax` keeps decoded while the
/// document is open, so the place is stable and unique.
#[derive(PartialEq, Eq, Hash)]
enum FontKey {
    Object(ObjectIdentifier),
    Inline(usize, usize),
}

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
pub(super) fn page_text<'a>(
    doc: &mut Document<'a>,
    content: &[u8],
    resources: &Resources<'a>,
) -> Result<String, TooLarge> {
    let mut run = Run {
        out: String::new(),
        pen: None,
        doc,
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
    run.stream(content, resources, state, 0)?;
    Ok(run.out)
}

struct Run<'f, 'a> {
    out: String,
    pen: Option<Pen>,
    doc: &'f mut Document<'a>,
}

impl<'a> Run<'_, 'a> {
    /// Charges `bytes` to the read budget; false once it is spent.
    fn read(&mut self, bytes: usize) -> bool {
        let budget = &mut self.doc.budget;
        match budget.bytes.checked_sub(bytes) {
            Some(left) => budget.bytes = left,
            None => budget.bytes = 0,
        }
        budget.bytes > 0
    }

    fn stream(
        &mut self,
        content: &[u8],
        resources: &Resources<'a>,
        state: State,
        depth: usize,
    ) -> Result<(), TooLarge> {
        if !self.read(content.len()) {
            return Ok(());
        }
        let mut gs = state;
        let mut saved: Vec<State> = Vec::new();
        let (mut tm, mut tlm) = (IDENTITY, IDENTITY);
        let mut by_name: HashMap<Vec<u8>, Rc<Font>> = HashMap::new();
        let mut ops = UntypedIter::new(content);
        while let Some(op) = ops.next() {
            let budget = &mut self.doc.budget;
            if budget.ops == 0 || budget.text == 0 {
                return Ok(());
            }
            budget.ops -= 1;
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
                        gs.font = Some(self.font(resources, name, &mut by_name)?);
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
                            // Each element is as much work as an operator.
                            let budget = &mut self.doc.budget;
                            if budget.ops == 0 {
                                break;
                            }
                            budget.ops -= 1;
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
                        && let Some(form) = self.form(resources, name)?
                    {
                        let inner = State {
                            ctm: form.matrix.map_or(gs.ctm, |m| mul(&m, &gs.ctm)),
                            ..gs.clone()
                        };
                        let resources = form.resources.as_ref().unwrap_or(resources);
                        self.stream(&form.content, resources, inner, depth + 1)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The Form XObject `name` in `resources`, read once per document.
    fn form(
        &mut self,
        resources: &Resources<'a>,
        name: &Name<'_>,
    ) -> Result<Option<Rc<Form<'a>>>, TooLarge> {
        let id = resources
            .x_objects
            .get_ref(name)
            .map(ObjectIdentifier::from);
        if let Some(known) = id.and_then(|id| self.doc.forms.get(&id)) {
            return Ok(known.clone());
        }
        let Some(stream) = resources.get_x_object(name) else {
            return Ok(None);
        };
        let dict = stream.dict();
        if !self.read(dict.data().len()) {
            return Ok(None);
        }
        let is_form = dict
            .get::<Name<'_>>(b"Subtype")
            .is_some_and(|s| s.as_ref() == b"Form");
        let content = if is_form {
            self.doc.streams.decode(&stream)?
        } else {
            None
        };
        let form = content.map(|content| {
            Rc::new(Form {
                content,
                resources: dict.get::<Dict<'_>>(b"Resources").map(Resources::new),
                matrix: dict.get::<[f32; 6]>(b"Matrix").map(|m| m.map(f64::from)),
            })
        });
        // Kept while the decoded content is (within the cache's budget).
        if let Some(id) = id
            && (form.is_none() || self.doc.streams.is_cached(id))
        {
            self.doc.forms.insert(id, form.clone());
        }
        Ok(form)
    }

    fn font(
        &mut self,
        resources: &Resources<'a>,
        name: &Name<'_>,
        by_name: &mut HashMap<Vec<u8>, Rc<Font>>,
    ) -> Result<Rc<Font>, TooLarge> {
        let key: &[u8] = name.as_ref();
        if let Some(f) = by_name.get(key) {
            return Ok(f.clone());
        }
        let by_ref = resources
            .fonts
            .get_ref(name)
            .map(|r| FontKey::Object(r.into()));
        if let Some(font) = by_ref.and_then(|id| self.doc.fonts.get(&id)) {
            by_name.insert(key.to_vec(), font.clone());
            return Ok(font.clone());
        }
        // A font the resources lack still shows its text, decoded as Standard.
        let dict = resources.get_font(name).unwrap_or_else(Dict::empty);
        self.read(dict.data().len());
        let id = match dict.obj_id() {
            Some(id) => FontKey::Object(id),
            None => FontKey::Inline(dict.data().as_ptr() as usize, dict.data().len()),
        };
        let font = match self.doc.fonts.get(&id) {
            Some(font) => font.clone(),
            None => {
                let font = Rc::new(Font::new(&dict, &mut self.doc.streams)?);
                self.doc.fonts.insert(id, font.clone());
                font
            }
        };
        by_name.insert(key.to_vec(), font.clone());
        Ok(font)
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
        let budget = &mut self.doc.budget;
        if text.len() > budget.text {
            budget.text = 0;
            return;
        }
        budget.text -= text.len();
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
