//! Text drawn in one flat colour: the way devices burn annotations in. Each character's core
//! is a connected run of pixels of exactly one value (its edges may be smoothed); characters of
//! one line share that value, a height and a baseline. Anatomy, speckle and photographs rarely
//! hold runs of one exact value shaped and lined up like that. This finds such lines whether or
//! not a recognizer can read them (text over speckle, at low contrast, in any font).

/// A line of flat-coloured characters: its box (right and bottom exclusive) and how many
/// characters it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub characters: u32,
}

/// Character sizes looked for, in pixels.
const MIN_HEIGHT: u32 = 5;
const MAX_HEIGHT: u32 = 64;
/// Characters a line must hold.
const MIN_CHARACTERS: usize = 3;
/// The ring around a glyph's box, in pixels, and how much of it may hold other runs of the
/// glyph's value (percent).
const RING: u32 = 2;
const CROWDED_PERCENT: u32 = 15;

#[derive(Debug, Clone, Copy)]
struct Component {
    key: u32,
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
    pixels: u32,
}

fn find(parent: &mut [u32], mut at: u32) -> u32 {
    while parent[at as usize] != at {
        parent[at as usize] = parent[parent[at as usize] as usize];
        at = parent[at as usize];
    }
    at
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (a, b) = (find(parent, a), find(parent, b));
    if a != b {
        parent[a.max(b) as usize] = a.min(b);
    }
}

/// Lines of flat-coloured characters in an image of `width` x `height` pixels whose colour
/// `key` gives (one value per pixel: a grey level, or a packed RGB triple).
pub fn lines(keys: &[u32], width: u32, height: u32) -> Vec<Line> {
    let (w, h) = (width as usize, height as usize);
    if keys.len() != w * h || w == 0 || h == 0 {
        return Vec::new();
    }
    // Runs of one value, 8-connected, by union-find over the raster.
    let mut parent: Vec<u32> = (0..(w * h) as u32).collect();
    for y in 0..h {
        for x in 0..w {
            let at = y * w + x;
            let key = keys[at];
            let mut join = |other: usize| {
                if keys[other] == key {
                    union(&mut parent, at as u32, other as u32);
                }
            };
            if x > 0 {
                join(at - 1);
            }
            if y > 0 {
                join(at - w);
                if x > 0 {
                    join(at - w - 1);
                }
                if x + 1 < w {
                    join(at - w + 1);
                }
            }
        }
    }
    let mut components: std::collections::HashMap<u32, Component> = std::collections::HashMap::new();
    for y in 0..h {
        for x in 0..w {
            let at = y * w + x;
            let root = find(&mut parent, at as u32);
            let (x, y) = (x as u32, y as u32);
            let c = components.entry(root).or_insert(Component {
                key: keys[at],
                left: x,
                top: y,
                right: x + 1,
                bottom: y + 1,
                pixels: 0,
            });
            c.left = c.left.min(x);
            c.top = c.top.min(y);
            c.right = c.right.max(x + 1);
            c.bottom = c.bottom.max(y + 1);
            c.pixels += 1;
        }
    }
    // Character-like: a few pixels at least, a character's height, not wider than tall by
    // much (a glyph, not a rule line or a region), not a filled block.
    let shaped: Vec<(u32, Component)> = components
        .into_iter()
        .filter(|(_, c)| {
            let (cw, ch) = (c.right - c.left, c.bottom - c.top);
            (MIN_HEIGHT..=MAX_HEIGHT).contains(&ch) && cw <= ch * 2 && c.pixels >= 6 && c.pixels * 10 <= cw * ch * 9
        })
        .collect();
    // And standing alone: a glyph is drawn on a background, so the ring of pixels around its
    // box holds little of its own value but for its neighbours in the line; speckle and
    // texture cut at a level are blobs packed among blobs of the same value.
    let mut glyphs = Vec::with_capacity(shaped.len());
    for (root, c) in shaped {
        let (mut ring, mut crowded) = (0u32, 0u32);
        let (x0, y0) = (c.left.saturating_sub(RING), c.top.saturating_sub(RING));
        let (x1, y1) = ((c.right + RING).min(width), (c.bottom + RING).min(height));
        for y in y0..y1 {
            for x in x0..x1 {
                if x >= c.left && x < c.right && y >= c.top && y < c.bottom {
                    continue;
                }
                ring += 1;
                let at = (y * width + x) as usize;
                if keys[at] == c.key && find(&mut parent, at as u32) != root {
                    crowded += 1;
                }
            }
        }
        if crowded * 100 <= ring * CROWDED_PERCENT {
            glyphs.push(c);
        }
    }
    glyphs.sort_by_key(|c| (c.key, c.top, c.left));
    // Glyphs of one colour, overlapping vertically by half the smaller height, of similar
    // heights and at most a character apart, form a line.
    let n = glyphs.len();
    let mut group: Vec<u32> = (0..n as u32).collect();
    for (i, &a) in glyphs.iter().enumerate() {
        for (j, &b) in glyphs.iter().enumerate().skip(i + 1) {
            if b.key != a.key || b.top >= a.bottom {
                break;
            }
            let (ha, hb) = (a.bottom - a.top, b.bottom - b.top);
            let overlap = a.bottom.min(b.bottom).saturating_sub(a.top.max(b.top));
            let gap = if b.left >= a.right { b.left - a.right } else { a.left.saturating_sub(b.right) };
            if overlap * 2 >= ha.min(hb) && ha.max(hb) <= ha.min(hb) * 3 && gap <= ha.max(hb) * 3 / 2 {
                union(&mut group, i as u32, j as u32);
            }
        }
    }
    let mut found: std::collections::HashMap<u32, Line> = std::collections::HashMap::new();
    for (i, &g) in glyphs.iter().enumerate() {
        let root = find(&mut group, i as u32);
        let line = found.entry(root).or_insert(Line {
            left: g.left,
            top: g.top,
            right: g.right,
            bottom: g.bottom,
            characters: 0,
        });
        line.left = line.left.min(g.left);
        line.top = line.top.min(g.top);
        line.right = line.right.max(g.right);
        line.bottom = line.bottom.max(g.bottom);
        line.characters += 1;
    }
    // A line is one character high: glyphs chained across rows (texture) are not text.
    let mut lines: Vec<Line> = found
        .into_values()
        .filter(|l| l.characters as usize >= MIN_CHARACTERS && l.bottom - l.top <= MAX_HEIGHT)
        .collect();
    lines.sort_by_key(|l| (l.top, l.left));
    lines
}

/// Lines of characters in an 8-bit grey image (and its colours, when it has them: a packed RGB
/// triple per pixel): drawn in one exact value (above), or standing out from their background
/// at some grey threshold (the image cut at each of several levels, light on dark and dark on
/// light alike, each cut searched the same way).
pub fn text_lines(grey: &[u8], colours: Option<&[u32]>, width: u32, height: u32) -> Vec<Line> {
    let exact: Vec<u32> = match colours {
        Some(colours) => colours.to_vec(),
        None => grey.iter().map(|&v| u32::from(v)).collect(),
    };
    let mut found = lines(&exact, width, height);
    for level in (32..=224).step_by(32) {
        let cut: Vec<u32> = grey.iter().map(|&v| u32::from(v >= level)).collect();
        found.extend(lines(&cut, width, height));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 40x12 image of value 0 with three 3x6 "characters" of value 200 on one baseline, and
    /// one alone further down.
    #[test]
    fn characters_in_a_row_are_a_line_and_one_alone_is_not() {
        let (w, h) = (60u32, 30u32);
        let mut keys = vec![0u32; (w * h) as usize];
        let mut draw = |x0: u32, y0: u32| {
            for y in y0..y0 + 6 {
                for x in x0..x0 + 3 {
                    // An "n": a hole in the middle keeps it from being a filled block.
                    if !(x == x0 + 1 && y > y0 + 1) {
                        keys[(y * w + x) as usize] = 200;
                    }
                }
            }
        };
        for x in [5, 10, 15] {
            draw(x, 3);
        }
        draw(40, 20);
        let found = lines(&keys, w, h);
        assert_eq!(found, vec![Line { left: 5, top: 3, right: 18, bottom: 9, characters: 3 }]);
    }
}
