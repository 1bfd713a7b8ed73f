#[test]
fn scratch_html_costs() {
    let cases: Vec<(&str, String)> = vec![
        ("div nest 2k", "<div>".repeat(2000)),
        ("div nest 5k", "<div>".repeat(5000)),
        ("div+close mismatched 5k", "<div></span>".repeat(5000)),
        ("b unclosed 50k", "<b>x".repeat(50000)),
        ("b i misnest 20k", "<b><i>x</b></i>".repeat(20000)),
        ("table nest 2k", "<table><tr><td>".repeat(2000)),
        ("p 100k", "<p>x".repeat(100000)),
        ("siblings 1MiB", "<div>hello</div>".repeat(65536)),
        ("a nest 5k", "<a href=x>".repeat(5000)),
        ("font 20k", "<font>x".repeat(20000)),
        ("li nest 5k", "<ul><li>".repeat(5000)),
    ];
    for (name, html) in cases {
        let t = std::time::Instant::now();
        let out = gochat::mail::html::sanitize(&html);
        let s = t.elapsed();
        let t = std::time::Instant::now();
        let _ = gochat::mail::html::text_from_html(&html);
        println!(
            "{name}: {} bytes -> sanitize {:?} ({} out), text {:?}",
            html.len(),
            s,
            out.len(),
            t.elapsed()
        );
    }
}
