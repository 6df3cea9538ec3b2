//! Any text: parsing, dumping, rendering an error and expanding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match kiln_parser::parse(text) {
        Ok(dockerfile) => {
            let env: Vec<(String, String)> = vec![("A".into(), "x y".into())];
            for stage in &dockerfile.stages {
                for instruction in &stage.instructions {
                    let _ = kiln_parser::expand::expand(
                        &instruction.kind,
                        dockerfile.directives.escape,
                        &env,
                    );
                }
            }
        }
        Err(err) => {
            let _ = err.render("Dockerfile", text);
        }
    }
    if let Ok(tree) = kiln_parser::parse_nodes(text) {
        let _ = tree.dump();
    }
});
