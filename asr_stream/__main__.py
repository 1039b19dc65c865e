from asr_stream.cli import main

raise SystemExit(main())
