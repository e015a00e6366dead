/* emulated: see cuda_emu.h */
