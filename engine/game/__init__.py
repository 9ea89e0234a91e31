"""Game assets: seamless textures, transparent sprites and sprite sheets."""
