//! Prints the text boxes found in a binary PGM (P5, 8-bit) or PPM (P6) image, by Tesseract
//! ("word") and by the flat-colour line finder ("line"): `find_text IMAGE`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: find_text IMAGE.pgm|IMAGE.ppm")?;
    let bytes = std::fs::read(&path)?;
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
    }
    let pixels = &bytes[at + 1..];
    let (width, height): (u32, u32) = (fields[1].parse()?, fields[2].parse()?);
    let colour = fields[0] == "P6";
    let (grey, keys): (Vec<u8>, Vec<u32>) = if colour {
        let rgb: Vec<&[u8]> = pixels.chunks_exact(3).collect();
        (
            rgb.iter().map(|p| ((p[0] as u32 * 3 + p[1] as u32 * 6 + p[2] as u32) / 10) as u8).collect(),
            rgb.iter().map(|p| (p[0] as u32) << 16 | (p[1] as u32) << 8 | p[2] as u32).collect(),
        )
    } else {
        (pixels.to_vec(), pixels.iter().map(|&v| v as u32).collect())
    };
    let started = std::time::Instant::now();
    let finder = dicomweb_ocr::TextFinder::new(None, "eng")?;
    for b in finder.find(&grey, width, height)? {
        println!("word {} {} {} {} {:.0}", b.left, b.top, b.right, b.bottom, b.confidence);
    }
    let ocr = started.elapsed();
    for l in dicomweb_ocr::flat::text_lines(&grey, colour.then_some(keys.as_slice()), width, height) {
        println!("line {} {} {} {} {}", l.left, l.top, l.right, l.bottom, l.characters);
    }
    eprintln!("ocr {:?}, lines {:?}", ocr, started.elapsed() - ocr);
    Ok(())
}
