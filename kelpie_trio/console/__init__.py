"""The web console: static HTML, CSS and JavaScript modules served by api/console.py."""
