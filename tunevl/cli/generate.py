"""``tunevl generate BUNDLE --image X --prompt "..."``: answer a prompt about images with a generative bundle."""

from __future__ import annotations

import argparse
import json


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle folder or Hub repo id of a generative model (LLaVA, Qwen2-VL, ...)")
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="an image; repeat for several")
    p.add_argument("--prompt", required=True, help="the question or instruction")
    p.add_argument("--system-prompt", help="a system turn before the prompt")
    p.add_argument("--max-new-tokens", type=int, help="default: the checkpoint's generation config, else 64")
    p.add_argument("--num-beams", type=int, help="beam search with this many beams")
    p.add_argument("--num-return-sequences", type=int, help="answers to return (one per line)")
    p.add_argument("--do-sample", action="store_true", help="sample instead of the checkpoint's default decoding")
    p.add_argument("--temperature", type=float, help="sampling temperature (implies --do-sample)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (implies --do-sample)")
    p.add_argument("--seed", type=int, help="seed of the sampling")
    p.add_argument("--base-model", help="a copy of the base model (its config must match the recorded one)")
    p.add_argument("--revision", help="Hub revision of the bundle")
    p.add_argument("--device", help="e.g. cuda or cpu (default: cpu)")
    p.add_argument("--json", action="store_true", help="print the answers as a JSON list")
    p.epilog = (
        "Example:\n"
        '  tunevl generate runs/qwen2_vl_sft_lora --image cat.jpg --prompt "What is in the image?"\n'
        '  tunevl generate me/llava-lora --image a.jpg --image b.jpg --prompt "Compare them." --num-beams 3'
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args) -> int:
    import tunevl
    from tunevl.errors import BundleError

    model = tunevl.load(args.bundle, revision=args.revision, device=args.device, base_model=args.base_model)
    if not hasattr(model, "generate"):
        raise BundleError(f"{args.bundle}: a {model.view.family} bundle does not generate text; tunevl generate takes "
                          "generative models (LLaVA, Qwen2-VL, Qwen2.5-VL, Idefics3, PaliGemma)")
    if args.seed is not None:
        import torch

        torch.manual_seed(args.seed)
    kwargs = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "num_return_sequences": args.num_return_sequences,
              "temperature": args.temperature, "top_p": args.top_p, "do_sample": True if args.do_sample else None}
    answer = model.generate(args.image, args.prompt, system_prompt=args.system_prompt,
                            **{k: v for k, v in kwargs.items() if v is not None})
    answers = answer if isinstance(answer, list) else [answer]
    print(json.dumps(answers) if args.json else "\n".join(answers))
    return 0
