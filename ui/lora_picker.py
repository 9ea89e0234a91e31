"""LoRA slots for a generation form: up to three of the user's LoRAs, each with its weight."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui.services import Services

# The Create and Game assets tabs' handlers name one (lora, weight) parameter pair per slot.
SLOTS = 3


def lora_choices(services: Services, owner: str) -> list[tuple[str, str]]:
    return [(lora.label, lora.id) for lora in services.loras.usable(owner)]


@dataclass
class LoraPicker:
    dropdowns: list[gr.Dropdown]
    weights: list[gr.Slider]

    @property
    def inputs(self) -> list:
        return [c for pair in zip(self.dropdowns, self.weights) for c in pair]

    @staticmethod
    def request(values) -> list[dict]:
        """The form's slot values (lora, weight, lora, weight, ...) as a request's ``loras``."""
        pairs = zip(values[::2], values[1::2])
        return [{"lora_id": lora_id, "weight": weight} for lora_id, weight in pairs if lora_id]

    def values_from(self, loras: list[dict]) -> list:
        """Slot values that reproduce a request's LoRAs (the style's own LoRA comes with the style)."""
        mine = [lora for lora in loras if lora.get("lora_id")][:SLOTS]
        values = []
        for index in range(SLOTS):
            lora = mine[index] if index < len(mine) else None
            values += [lora["lora_id"] if lora else None, float(lora["weight"]) if lora else 1.0]
        return values


def build_lora_picker(services: Services, elem_id: str) -> LoraPicker:
    """An accordion of LoRA slots, empty when built: the user's LoRAs fill them when the page loads, and
    again when it is opened or on ↻."""
    with gr.Accordion("LoRAs (your trained and uploaded styles)", open=False) as accordion:
        dropdowns, weights = [], []
        for index in range(SLOTS):
            with gr.Row(equal_height=True):
                dropdowns.append(gr.Dropdown([], value=None, label=f"LoRA {index + 1}", scale=4,
                                             elem_id=f"{elem_id}-{index}"))
                weights.append(gr.Slider(-2, 2, value=1.0, step=0.05, label="Weight", scale=3))
        with gr.Row():
            refresh = gr.Button("↻ Refresh list", size="sm")
            gr.Markdown("Train a style or upload a .safetensors LoRA in the **Game assets** tab.")
    picker = LoraPicker(dropdowns, weights)

    def refreshed(request: gr.Request, *current):
        fresh = lora_choices(services, services.owner(request))
        ids = {value for _, value in fresh}
        return [gr.update(choices=fresh, value=value if value in ids else None) for value in current]

    def loaded(request: gr.Request):
        fresh = lora_choices(services, services.owner(request))
        return [gr.update(choices=fresh) for _ in dropdowns]

    # No triggers and no inputs: when the page loads.
    gr.on(None, loaded, None, dropdowns, api_visibility="private")
    refresh.click(refreshed, dropdowns, dropdowns, api_visibility="private")
    accordion.expand(refreshed, dropdowns, dropdowns, api_visibility="private")
    return picker
