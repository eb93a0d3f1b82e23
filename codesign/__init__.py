"""codesign: map traces onto PIM configurations and search (architecture x hardware) jointly."""
